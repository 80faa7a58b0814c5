"""Backbones: classic models, transformers causal LMs (and, with the catalog issue, open_clip CLIP)."""
