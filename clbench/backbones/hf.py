"""The ``hf:`` backbone entry: a transformers LM, causal or seq2seq as its config says.

``hf:<dir | file.gguf | pypi:package | org/name>`` is resolved by
:func:`clbench.backbones.hf_loading.resolve_source`; a config with ``is_encoder_decoder`` (T5,
BART) builds :class:`clbench.backbones.hf_seq2seq.Seq2SeqLMBackbone`, any other
:class:`clbench.backbones.hf_causal.CausalLMBackbone`. ``hf-seq2seq:`` names the seq2seq backbone
explicitly (:func:`clbench.backbones.hf_seq2seq.build_hf_seq2seq`).
"""

from __future__ import annotations

from clbench.api.backbone import Backbone
from clbench.asset_policy import resolve_downloads
from clbench.backbones.hf_causal import build_causal_from
from clbench.backbones.hf_loading import is_encoder_decoder, resolve_source
from clbench.backbones.hf_seq2seq import build_seq2seq_from
from clbench.errors import UsageError


def build_hf(spec: str, *, allow_download: bool | None = None) -> Backbone:
    """Transformers LM from hf:<dir | file.gguf | pypi:package | org/name> (causal, or seq2seq by
    config). ``allow_download``: see :func:`clbench.asset_policy.resolve_downloads`."""
    _, _, target = spec.partition(":")
    if not target:
        raise UsageError(f"bad backbone spec {spec!r}: expected hf:<folder>, hf:<file.gguf>, hf:pypi:<package> or hf:<org/name>")
    allow = resolve_downloads(allow_download)
    kind, source = resolve_source(spec, target)
    if is_encoder_decoder(kind, source, allow_download=allow):
        return build_seq2seq_from(spec, kind, source, allow_download=allow)
    return build_causal_from(spec, kind, source, allow_download=allow)
