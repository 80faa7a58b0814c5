"""Figures from accuracy matrices: forgetting curves and heat maps (matplotlib, no torch).

Both are readable in grey-scale and for colour-blind readers: lines differ in marker and dash
as well as colour (Okabe-Ito palette), and heat maps use the perceptually uniform ``cividis``
map with every value printed in its cell. Figures are saved as PNG and SVG with fixed metadata
so the same inputs give the same files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DASHES = ("-", "--", "-.", ":")
SAVE_METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}


def _save(fig: plt.Figure, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        path = stem.with_suffix(f".{ext}")
        if ext == "svg":
            plt.rcParams["svg.hashsalt"] = "clbench"
        fig.savefig(path, dpi=120, bbox_inches="tight", metadata=SAVE_METADATA[ext])
        paths.append(path)
    plt.close(fig)
    return paths


def forgetting_curves(panels: Sequence[tuple[str, np.ndarray]], columns: Sequence[str], n_tasks: int, stem: Path, title: str) -> list[Path]:
    """Accuracy on each task vs tasks trained, one panel per strategy.

    Args:
        panels: ``(strategy label, matrix)`` with matrix shape (T+1, C) in [0, 1], NaN = not run.
        columns: column labels (trained tasks first, then probes, drawn dashed-grey).
        n_tasks: number of trained tasks T.
        stem: output path without suffix.
        title: figure title.
    """
    n = len(panels)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False, sharey=True)
    x = np.arange(n_tasks + 1)
    for ax, (label, matrix) in zip(axes.flat, panels, strict=False):
        for i, name in enumerate(columns):
            probe = i >= n_tasks
            style = dict(color="#555555", linestyle=":", marker="x") if probe else dict(
                color=OKABE_ITO[i % len(OKABE_ITO)], linestyle=DASHES[(i // len(OKABE_ITO)) % len(DASHES)], marker=MARKERS[i % len(MARKERS)])
            ax.plot(x, 100 * matrix[:, i], label=f"{name} (probe)" if probe else name, markersize=4, linewidth=1.4, **style)
            if not probe:
                ax.axvline(i + 1, color="#dddddd", linewidth=0.6, zorder=0)
        ax.set_title(label, fontsize=10)
        ax.set_xticks(x, ["init"] + [str(t) for t in range(1, n_tasks + 1)])
        ax.set_xlabel("tasks trained")
        ax.set_ylim(-2, 102)
        ax.grid(axis="y", color="#eeeeee")
    for ax in axes.flat[n:]:
        ax.axis("off")
    axes[0, 0].set_ylabel("accuracy (%)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.02 - 0.03 * (len(labels) // 6)))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * (len(labels) // 6), 1, 1))
    return _save(fig, stem)


def accuracy_heatmap(matrix: np.ndarray, rows: Sequence[str], columns: Sequence[str], stem: Path, title: str) -> list[Path]:
    """The accuracy matrix as a heat map with every value printed (percent)."""
    data = 100 * np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(columns), 1.0 + 0.45 * len(rows)))
    image = ax.imshow(np.ma.masked_invalid(data), cmap="cividis", vmin=0, vmax=100, aspect="auto")
    for (r, c), value in np.ndenumerate(data):
        if np.isfinite(value):
            ax.text(c, r, f"{value:.1f}", ha="center", va="center", fontsize=7, color="black" if value > 55 else "white")
    ax.set_xticks(range(len(columns)), columns, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("after training")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04, label="accuracy (%)")
    fig.tight_layout()
    return _save(fig, stem)
