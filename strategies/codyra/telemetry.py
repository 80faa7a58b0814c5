"""What CoDyRA reports after each task: rank allocation and weight drift (arXiv 2412.01004 §3).

* effective rank of every adapted module (nonzero gates at the merge), also arranged as a grid of
  module kinds × layer indices (the paper's rank-allocation figure);
* ``‖ΔW‖_F`` of the update merged at this task, per module and summed (the per-task drift);
* the cumulative drift ``‖W_t − W_0‖_F`` per module and summed.

The cumulative drift is computed from the merged factors, which the official code also keeps for
bookkeeping: ``W_t − W_0 = Σ_s B_s diag(w_s) A_s = B̄ Ā`` with the factors of every task stacked,
and ``‖B̄ Ā‖_F² = Σ_ij (B̄ᵀB̄ ⊙ ĀĀᵀ)_ij`` needs only R × R Gram matrices (R = ranks kept so far),
never a copy of the pretrained weights.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from clbench.strategies.codyra.layer import MergedUpdate

_LAYER_COMPONENT = re.compile(r"^\d+$")
_TRAILING_INDEX = re.compile(r"^(.*?)(\d+)$")


def module_group_and_layer(name: str) -> tuple[str, int | None]:
    """Split a module name into a layer-free group label and its layer index.

    The layer is the first all-digit name component (``visual.transformer.resblocks.3.attn.q_proj``
    → ``visual.transformer.resblocks.*.attn.q_proj``, 3), else the first component ending in digits
    (``fc2`` → ``fc*``, 2), else ``None``.
    """
    parts = name.split(".")
    for i, part in enumerate(parts):
        if _LAYER_COMPONENT.match(part):
            return ".".join([*parts[:i], "*", *parts[i + 1:]]), int(part)
    for i, part in enumerate(parts):
        match = _TRAILING_INDEX.match(part)
        if match and match.group(1):
            return ".".join([*parts[:i], match.group(1) + "*", *parts[i + 1:]]), int(match.group(2))
    return name, None


def rank_grid(ranks: dict[str, int]) -> dict[str, Any]:
    """Effective ranks as a (module group × layer) table: ``{"rows", "columns", "matrix"}``.

    Rows keep the modules' order of first appearance; columns are sorted layer indices (modules
    without a layer index get column ``null``); cells with no module are ``null``. ``matrix`` with
    sibling ``rows`` and ``columns`` is the layout the report labels its telemetry heat maps from.
    """
    rows: list[str] = []
    columns: set[int | None] = set()
    cells: dict[tuple[str, int | None], int] = {}
    for name, rank in ranks.items():
        group, layer = module_group_and_layer(name)
        if group not in rows:
            rows.append(group)
        columns.add(layer)
        cells[(group, layer)] = rank
    ordered = sorted(columns, key=lambda c: (c is None, c if c is not None else 0))
    return {"rows": rows, "columns": ordered, "matrix": [[cells.get((r, c)) for c in ordered] for r in rows]}


class DriftTracker:
    """Stacked merged factors per module, for the cumulative drift ``‖W_t − W_0‖_F``."""

    def __init__(self) -> None:
        self.scaled_b: dict[str, torch.Tensor] = {}
        self.a: dict[str, torch.Tensor] = {}

    def add(self, name: str, update: MergedUpdate) -> None:
        """Append one task's merged factors (``B diag(w)``, ``A``) for module ``name``."""
        if name in self.a:
            self.scaled_b[name] = torch.cat([self.scaled_b[name], update.scaled_b], dim=1)
            self.a[name] = torch.cat([self.a[name], update.a], dim=0)
        else:
            self.scaled_b[name] = update.scaled_b.clone()
            self.a[name] = update.a.clone()

    def cumulative_fro(self, name: str) -> float:
        """``‖Σ_s B_s diag(w_s) A_s‖_F`` over the tasks merged so far (0 before any)."""
        if name not in self.a or self.a[name].shape[0] == 0:
            return 0.0
        b, a = self.scaled_b[name].double(), self.a[name].double()
        squared = float(((b.t() @ b) * (a @ a.t())).sum())
        return math.sqrt(max(squared, 0.0))  # rounding can leave a tiny negative for a zero update

    def stored_ranks(self) -> int:
        """Rank-1 factors kept in total (memory use is this times d_in + d_out per module)."""
        return sum(int(a.shape[0]) for a in self.a.values())

    def state_dict(self) -> dict[str, Any]:
        return {"scaled_b": dict(self.scaled_b), "a": dict(self.a)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scaled_b = {k: v.float() for k, v in state.get("scaled_b", {}).items()}
        self.a = {k: v.float() for k, v in state.get("a", {}).items()}


def task_report(rank: int, merged: dict[str, MergedUpdate], drift: DriftTracker | None, kappa_max: float, prox_steps: int) -> dict[str, Any]:
    """The JSON-ready telemetry of one task boundary (after the factors were added to ``drift``)."""
    ranks = {name: m.kept_rank for name, m in merged.items()}
    delta = {name: m.delta_fro for name, m in merged.items()}
    report: dict[str, Any] = {
        "rank": rank,
        "effective_rank": ranks,
        "effective_rank_mean": sum(ranks.values()) / len(ranks) if ranks else 0.0,
        "effective_rank_fraction": sum(ranks.values()) / (rank * len(ranks)) if ranks else 0.0,
        "effective_rank_grid": rank_grid(ranks),
        "delta_w_fro": delta,
        "delta_w_fro_total": sum(delta.values()),
        "delta_w_fro_global": math.sqrt(sum(v * v for v in delta.values())),
        "kappa_max": kappa_max,
        "prox_steps": prox_steps,
    }
    if drift is not None:
        cumulative = {name: drift.cumulative_fro(name) for name in merged}
        report["cumulative_drift_fro"] = sum(cumulative.values())
        report["cumulative_drift_fro_global"] = math.sqrt(sum(v * v for v in cumulative.values()))
        report["cumulative_drift_fro_per_module"] = cumulative
    return report
