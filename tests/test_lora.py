"""The shared LoRA layer: zero-initialised update, exact merge, gradients only on adapters."""

from __future__ import annotations

import torch
from torch import nn

from clbench.nn import LoRALinear, apply_lora, unwrap_lora


def _layer(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(13, 7).double()


def test_fresh_adapter_equals_base_and_merge_is_exact() -> None:
    base = _layer()
    reference = nn.Linear(13, 7).double()
    reference.load_state_dict(base.state_dict())
    lora = LoRALinear(base, rank=3, alpha=6.0)
    x = torch.randn(5, 13, dtype=torch.float64)
    assert torch.equal(lora(x), reference(x))
    with torch.no_grad():
        lora.lora_B.normal_()
    expected = reference(x) + 2.0 * (x @ lora.lora_A.t() @ lora.lora_B.t())  # scaling alpha / r = 2
    torch.testing.assert_close(lora(x), expected)
    before = lora(x)
    lora.merge_()
    torch.testing.assert_close(lora(x), before)
    assert torch.count_nonzero(lora.lora_B) == 0


def test_only_adapter_parameters_get_gradients() -> None:
    model = nn.Sequential(_layer(), nn.ReLU(), _layer(1))
    wrapped = apply_lora(model, {"0": model[0]}, rank=2, alpha=2.0)
    with torch.no_grad():
        wrapped["0"].lora_B.normal_()
    x = torch.randn(4, 13, dtype=torch.float64)
    nn.Sequential(model[0], nn.ReLU())(x).sum().backward()
    lora = wrapped["0"]
    assert lora.base.weight.grad is None and lora.base.bias.grad is None
    assert lora.lora_A.grad is not None and lora.lora_B.grad is not None


def test_unwrap_restores_plain_linears_with_the_same_function() -> None:
    model = nn.Sequential(_layer(), nn.ReLU(), nn.Linear(7, 3).double())
    apply_lora(model, {"0": model[0], "2": model[2]}, rank=2, alpha=4.0)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            with torch.no_grad():
                m.lora_B.normal_()
    x = torch.randn(6, 13, dtype=torch.float64)
    before = model(x)
    assert unwrap_lora(model) == 2
    assert all(type(m) in (nn.Linear, nn.ReLU, nn.Sequential) for m in model.modules())
    torch.testing.assert_close(model(x), before)


def test_per_kind_defaults_resolve_in_one_table_and_settings_win() -> None:
    from clbench.nn.lora_defaults import resolve_lora
    from clbench.strategies.altlora import AltLoRAConfig
    from clbench.strategies.lora import LoRAConfig

    # TRACE's peft LoraConfig on LLMs; CoDyRA's naive LoRA r=16, scale 1 on CLIP
    assert resolve_lora(LoRAConfig(), "llm") == {"rank": 8, "alpha": 32.0, "dropout": 0.1}
    assert resolve_lora(LoRAConfig(), "clip") == {"rank": 16, "alpha": 16.0, "dropout": 0.0}
    assert resolve_lora(LoRAConfig(), "some-plugin-kind") == resolve_lora(LoRAConfig(), "classic")
    # a set value wins; alpha does not follow an overridden rank (peft's convention)
    assert resolve_lora(LoRAConfig(rank=4, dropout=0.0), "llm") == {"rank": 4, "alpha": 32.0, "dropout": 0.0}
    # placements (which layers) are the strategy's: q,v on LLMs, every linear layer on CLIP
    from clbench.api.adapters import ALL_LINEAR, QV
    from clbench.strategies.lora import SequentialLoRA

    assert SequentialLoRA.adapter_placement == QV and SequentialLoRA.adapter_placement_by_kind == {"clip": ALL_LINEAR}
    for kind in ("llm", "clip", "classic", "vit"):  # altlora follows lora's table
        assert AltLoRAConfig().kind_settings(kind) == LoRAConfig().kind_settings(kind)
