"""KV-cache policies for generation (placeholder during development)."""
