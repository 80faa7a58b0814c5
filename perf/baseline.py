"""Import modules as they are at another git revision, so a perf script can time "before" beside "after".

``import_from_ref("main", {"kernels/cpu.py": "clbench.kernels.cpu", "kernels/plan.py": "clbench.kernels.plan"})``
writes those files, as committed at ``main``, into a temporary package and imports them from there;
imports between the listed modules are redirected into the same package, every other import
(torch, the rest of clbench) resolves to the working tree. The "before" code then runs in the same
process, on the same inputs and the same thread, interleaved with the current code.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def git_show(ref: str, path: str) -> str:
    """The text of ``path`` at ``ref`` (raises ``SystemExit`` with one line when git cannot give it)."""
    result = subprocess.run(["git", "-C", str(REPO), "show", f"{ref}:{path}"], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"cannot read {path} at {ref!r}: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'git failed'}")
    return result.stdout


def import_from_ref(ref: str, modules: dict[str, str]) -> dict[str, types.ModuleType]:
    """Import each ``repo path -> dotted module name`` as committed at ``ref``; returns name -> module.

    The modules live in a fresh package ``baseline_<n>`` (so they never shadow the working tree's);
    ``from <dotted name> import ...`` between them is rewritten to point into that package.
    """
    package = f"baseline_{abs(hash((ref, tuple(sorted(modules.items()))))) % 10**8}"
    root = Path(tempfile.mkdtemp(prefix="clbench-baseline-")) / package
    root.mkdir(parents=True)
    (root / "__init__.py").write_text(f'"""Modules of {ref!r} for side-by-side timing."""\n')
    renames = {dotted: f"{package}.{dotted.rsplit('.', 1)[-1]}" for dotted in modules.values()}
    for path, dotted in modules.items():
        text = git_show(ref, path)
        # Longest names first, so "a.b.cpu" is not half-rewritten by a rule for "a.b.c".
        for old in sorted(renames, key=len, reverse=True):
            text = text.replace(f"from {old} import", f"from {renames[old]} import").replace(f"import {old}\n", f"import {renames[old]}\n")
        (root / f"{dotted.rsplit('.', 1)[-1]}.py").write_text(text)
    sys.path.insert(0, str(root.parent))
    try:
        return {dotted: importlib.import_module(renames[dotted]) for dotted in modules.values()}
    finally:
        sys.path.remove(str(root.parent))
