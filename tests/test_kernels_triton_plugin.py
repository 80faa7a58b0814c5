"""A pytest plugin (``-p test_kernels_triton_plugin``) that sends the fast-path backend to Triton.

Loaded only in the ``TRITON_INTERPRET=1`` child of ``test_kernels_triton.py`` that re-runs other
engineers' layer tests (MoRA, CoDyRA, ...): their fixtures select ``CLBENCH_KERNELS=cpu``, which this
plugin maps to ``triton``, so their mechanism tests also run through the Triton kernels. It defines
no tests of its own.
"""

from __future__ import annotations

from typing import Any


def pytest_configure(config: Any) -> None:
    from clbench.kernels import dispatch

    real = dispatch.requested_backend

    def fast_path_is_triton(backend: str | None = None) -> str:
        name = real(backend)
        return "triton" if name in ("cpu", "auto") else name

    dispatch.requested_backend = fast_path_is_triton
