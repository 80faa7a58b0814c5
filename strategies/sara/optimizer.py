"""``SaRAAdamW``: torch's AdamW on the sparse value vectors, plus SaRA's nuclear-norm step.

The official optimizer (``sjtuplayer/SaRA`` ``optim/adamw.py``) is AdamW over the selected
entries, where before each update it adds the gradient of ``λ_rank·‖W_q ⊙ M_q‖_*`` for one matrix
``q`` drawn at random from the eligible ones (2-D, both sides > 64). In its default path that
gradient lands on the original ``nn.Parameter`` objects, which neither the optimizer nor the model
reads, so the term has no effect. Here the same (sub)gradient, ``λ_rank·(U Vᵀ)[M_q]``, is added to
``values.grad`` of the drawn matrix, so it acts as in the dense-masked ``adamw2.py`` path.

Everything else is :class:`torch.optim.AdamW` (decoupled weight decay before the moments, bias
correction), so the state is ``|M|``-sized and ``state_dict`` round-trips exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class SaRAAdamW(torch.optim.AdamW):
    """AdamW with a hook that adds penalty gradients before each update.

    Attributes:
        penalty: called with no arguments at the start of every :meth:`step` (before the
            update); it adds the nuclear-norm gradient to the drawn matrix's ``values.grad``.
        skip_next: when set, the next :meth:`step` performs no update (the official code's step
            at the progressive re-selection); it is cleared by that step.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.penalty: Callable[[], None] | None = None
        self.skip_next = False

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        if self.skip_next:
            self.skip_next = False
            return None
        if self.penalty is not None:
            self.penalty()
        return super().step(closure)

    def reset_state(self, params: list[torch.nn.Parameter]) -> None:
        """Forget the moments and step counts of ``params`` (a fresh Adam state after re-selection)."""
        for p in params:
            self.state.pop(p, None)

    def state_bytes(self, params: list[torch.nn.Parameter] | None = None) -> int:
        """Bytes of the state tensors (moments, step) of ``params`` (default: all)."""
        wanted = None if params is None else {id(p) for p in params}
        return sum(v.numel() * v.element_size() for p, s in self.state.items() if wanted is None or id(p) in wanted
                   for v in s.values() if torch.is_tensor(v))
