"""The split q/k/v/out attention equals ``nn.MultiheadAttention`` (outputs, weights, gradients),
alone and inside a tiny open_clip model whose towers use it for every attention block."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from clbench.backbones.clip_attention import SplitMultiheadAttention, split_attention_modules
from test_vision_fixtures import write_tiny_clip_config

TOL = 1e-5


def _pair(batch_first: bool, **kwargs) -> tuple[nn.MultiheadAttention, SplitMultiheadAttention]:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(24, 4, batch_first=batch_first, **kwargs)
    with torch.no_grad():  # non-zero biases so a bias mix-up would show
        mha.in_proj_bias.normal_() if mha.in_proj_bias is not None else None
        mha.out_proj.bias.normal_()
    return mha, SplitMultiheadAttention.from_multihead(mha)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("mask_kind", ["none", "causal-float", "bool", "per-head"])
def test_split_attention_matches_multihead_attention(batch_first: bool, mask_kind: str) -> None:
    mha, split = _pair(batch_first)
    n, length = 3, 7
    x = torch.randn((n, length, 24) if batch_first else (length, n, 24))
    mask = None
    if mask_kind == "causal-float":
        mask = torch.full((length, length), float("-inf")).triu_(1)
    elif mask_kind == "bool":
        mask = torch.rand(length, length) > 0.7
        mask.fill_diagonal_(False)
    elif mask_kind == "per-head":
        mask = torch.randn(n * 4, length, length)
    expected, _ = mha(x, x, x, need_weights=False, attn_mask=mask)
    got, _ = split(x, x, x, need_weights=False, attn_mask=mask)
    assert torch.allclose(got, expected, atol=TOL), (got - expected).abs().max()


def test_split_attention_matches_with_padding_mask_weights_and_gradients() -> None:
    mha, split = _pair(batch_first=True)
    x = torch.randn(2, 5, 24, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    padding = torch.tensor([[False] * 5, [False, False, False, True, True]])
    out_ref, w_ref = mha(x, x, x, key_padding_mask=padding, need_weights=True)
    out, w = split(x2, x2, x2, key_padding_mask=padding, need_weights=True)
    assert torch.allclose(out, out_ref, atol=TOL) and torch.allclose(w, w_ref, atol=TOL)
    out_ref.square().sum().backward()
    out.square().sum().backward()
    assert torch.allclose(x2.grad, x.grad, atol=1e-4)
    assert torch.allclose(split.q_proj.weight.grad, mha.in_proj_weight.grad[:24], atol=1e-4)
    assert torch.allclose(split.v_proj.bias.grad, mha.in_proj_bias.grad[48:], atol=1e-4)
    assert torch.allclose(split.out_proj.weight.grad, mha.out_proj.weight.grad, atol=1e-4)


def test_cross_attention_with_other_key_width() -> None:
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(16, 2, kdim=10, vdim=12, batch_first=True)
    split = SplitMultiheadAttention.from_multihead(mha)
    q, k, v = torch.randn(2, 3, 16), torch.randn(2, 6, 10), torch.randn(2, 6, 12)
    assert torch.allclose(split(q, k, v)[0], mha(q, k, v, need_weights=False)[0], atol=TOL)


def test_split_copies_weights_and_frozen_state() -> None:
    mha, split = _pair(batch_first=True)
    mha.requires_grad_(False)
    frozen = SplitMultiheadAttention.from_multihead(mha)
    assert not any(p.requires_grad for p in frozen.parameters())
    assert torch.equal(torch.cat([split.q_proj.weight, split.k_proj.weight, split.v_proj.weight]), mha.in_proj_weight)
    with torch.no_grad():
        split.q_proj.weight.zero_()
    assert mha.in_proj_weight.abs().sum() > 0, "the split module must hold copies, not views"


def test_tiny_open_clip_towers_are_unchanged_by_the_split(tmp_path: Path) -> None:
    import open_clip

    open_clip.add_model_config(write_tiny_clip_config(tmp_path))
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip-test").eval()
    reference = copy.deepcopy(model)
    names = split_attention_modules(model)
    assert len(names) == 4 and not any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
    images = torch.randn(3, 3, 32, 32)
    tokens = open_clip.get_tokenizer("tiny-clip-test")(["a photo of a cat.", "a dog", "x"])
    with torch.no_grad():
        assert torch.allclose(model.encode_image(images), reference.encode_image(images), atol=TOL)
        assert torch.allclose(model.encode_text(tokens), reference.encode_text(tokens), atol=TOL)  # causal mask path
        # the new projections are really on the forward path
        model.visual.transformer.resblocks[0].attn.q_proj.weight.mul_(3.0)
        model.transformer.resblocks[1].attn.out_proj.weight.mul_(3.0)
        assert not torch.allclose(model.encode_image(images), reference.encode_image(images), atol=1e-3)
        assert not torch.allclose(model.encode_text(tokens), reference.encode_text(tokens), atol=1e-3)
