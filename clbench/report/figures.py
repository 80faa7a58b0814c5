"""Figures from accuracy matrices: forgetting curves and heat maps (matplotlib, no torch).

Both are readable in grey-scale and for colour-blind readers: lines differ in marker and dash
as well as colour (Okabe-Ito palette), and heat maps use the perceptually uniform ``cividis``
map with every value printed in its cell. Figures are saved as PNG and SVG with fixed metadata
so the same inputs give the same files.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from clbench.safeio import make_dirs, write_bytes_atomic  # noqa: E402

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
DASHES = ("-", "--", "-.", ":")
SAVE_METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None}}


def _save(fig: plt.Figure, stem: Path) -> list[Path]:
    """Save ``stem.png`` and ``stem.svg``, each rendered in memory and written atomically."""
    make_dirs(stem.parent)
    paths = []
    try:
        for ext in ("png", "svg"):
            path = stem.parent / f"{stem.name}.{ext}"
            if ext == "svg":
                plt.rcParams["svg.hashsalt"] = "clbench"
            buffer = io.BytesIO()
            fig.savefig(buffer, format=ext, dpi=120, bbox_inches="tight", metadata=SAVE_METADATA[ext])
            write_bytes_atomic(path, buffer.getvalue())
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def forgetting_curves(panels: Sequence[tuple[str, np.ndarray]], columns: Sequence[str], n_tasks: int, stem: Path, title: str,
                      row0_label: str = "init") -> list[Path]:
    """Accuracy on each task vs tasks trained, one panel per strategy.

    Args:
        panels: ``(strategy label, matrix)`` with matrix shape (T+1, C) in [0, 1], NaN = not run.
        columns: column labels (trained tasks first, then probes, drawn dashed-grey).
        n_tasks: number of trained tasks T.
        stem: output path without suffix.
        title: figure title.
        row0_label: what row 0 is (``init`` for random models, ``zero-shot`` for pretrained ones);
            row-0 points are drawn hollow.
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
            ax.plot([0], [100 * matrix[0, i]], marker=style["marker"], markerfacecolor="white", markeredgecolor=style["color"], linestyle="none", markersize=6)
            if not probe:
                ax.axvline(i + 1, color="#dddddd", linewidth=0.6, zorder=0)
        ax.set_title(label, fontsize=10)
        ax.set_xticks(x, [row0_label] + [str(t) for t in range(1, n_tasks + 1)])
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


def heatmap(data: np.ndarray, rows: Sequence[str], columns: Sequence[str], stem: Path, title: str, *, xlabel: str, ylabel: str,
            value_format: str = "{:.1f}", vmin: float | None = None, vmax: float | None = None, colorbar: str = "") -> list[Path]:
    """A heat map with every finite value printed in its cell (``cividis``: grey-scale safe)."""
    data = np.asarray(data, dtype=float)
    finite = data[np.isfinite(data)]
    low = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    high = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if high <= low:
        high = low + 1.0
    fig, ax = plt.subplots(figsize=(1.6 + 0.75 * len(columns), 1.0 + 0.32 * max(len(rows), 3)))
    image = ax.imshow(np.ma.masked_invalid(data), cmap="cividis", vmin=low, vmax=high, aspect="auto")
    small = 7 if len(rows) <= 40 else 5
    for (r, c), value in np.ndenumerate(data):
        if np.isfinite(value):
            bright = (value - low) / (high - low) > 0.55
            ax.text(c, r, value_format.format(value), ha="center", va="center", fontsize=small, color="black" if bright else "white")
    ax.set_xticks(range(len(columns)), columns, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=small + 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04, label=colorbar)
    fig.tight_layout()
    return _save(fig, stem)


def accuracy_heatmap(matrix: np.ndarray, rows: Sequence[str], columns: Sequence[str], stem: Path, title: str) -> list[Path]:
    """The accuracy matrix as a heat map with every value printed (percent)."""
    return heatmap(100 * np.asarray(matrix, dtype=float), rows, columns, stem, title, xlabel="evaluated task", ylabel="after training",
                   vmin=0, vmax=100, colorbar="accuracy (%)")


def _style(i: int) -> dict[str, object]:
    """Colour, dash and marker all change with ``i``, so lines stay apart in grey-scale too."""
    return {"color": OKABE_ITO[i % len(OKABE_ITO)], "linestyle": DASHES[i % len(DASHES)], "marker": MARKERS[i % len(MARKERS)]}


def average_accuracy_curves(curves: Sequence[tuple[str, Sequence[float], float]], n_tasks: int, stem: Path, title: str, row0_label: str) -> list[Path]:
    """A_t (mean accuracy over the tasks seen so far) after each task, one line per strategy.

    Args:
        curves: ``(label, [A_1..A_T], mean row-0 score over the trained tasks)`` per strategy.
        row0_label: how row 0 is called for this backbone (``init`` or ``zero-shot``).
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    x = np.arange(1, n_tasks + 1)
    for i, (label, values, row0) in enumerate(curves):
        style = _style(i)
        ax.plot(x, 100 * np.asarray(values, dtype=float), label=label, linewidth=1.5, markersize=5, **style)  # type: ignore[arg-type]
        ax.plot([0], [100 * row0], marker=style["marker"], markerfacecolor="white", markeredgecolor=style["color"], linestyle="none", markersize=6)
    ax.set_xticks(np.arange(0, n_tasks + 1), [f"{row0_label}\n(row 0)"] + [str(t) for t in x])
    ax.set_xlabel("tasks trained")
    ax.set_ylabel("mean accuracy over seen tasks (%)")
    ax.set_ylim(-2, 102)
    ax.grid(axis="y", color="#eeeeee")
    ax.legend(fontsize=8, frameon=False, loc="best")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, stem)


def telemetry_curves(series: dict[str, dict[str, list[float]]], tasks: Sequence[str], stem: Path, title: str) -> list[Path]:
    """One panel per telemetry value, one line per strategy, x = tasks trained."""
    n = len(series)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.0 * rows), squeeze=False)
    labels = sorted({label for by_label in series.values() for label in by_label})
    x = np.arange(1, len(tasks) + 1)
    for ax, (path, by_label) in zip(axes.flat, sorted(series.items()), strict=False):
        for label, values in sorted(by_label.items()):
            ax.plot(x[: len(values)], values, label=label, linewidth=1.4, markersize=4, **_style(labels.index(label)))  # type: ignore[arg-type]
        ax.set_title(path, fontsize=8)
        ax.set_xticks(x, [str(t) for t in x])
        ax.set_xlabel("after task", fontsize=8)
        ax.grid(axis="y", color="#eeeeee")
    for ax in axes.flat[n:]:
        ax.axis("off")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return _save(fig, stem)


def plasticity_overview(points: Sequence[dict[str, object]], stem: Path, title: str) -> list[Path]:
    """Who keeps what while still learning: learning accuracy against forgetting and against Last.

    Args:
        points: per strategy ``{"label", "learned" (bool), "x", "x_err", "forgetting", "forgetting_err",
            "last", "last_err"}`` in [0, 1]; an ``*_err`` is ``(low, high)`` (an interval) or ``None``.
            Strategies that did not learn are drawn hollow and named so in the legend.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.2))
    for i, point in enumerate(points):
        style = _style(i)
        learned = bool(point["learned"])
        label = str(point["label"]) + ("" if learned else " (did not learn)")
        x = 100 * float(point["x"])  # type: ignore[arg-type]
        for ax, key in zip(axes, ("forgetting", "last"), strict=True):
            y = 100 * float(point[key])  # type: ignore[arg-type]
            ax.errorbar([x], [y], xerr=_error(x, point["x_err"]), yerr=_error(y, point[f"{key}_err"]), color=style["color"],
                        marker=style["marker"], markersize=8, markerfacecolor=style["color"] if learned else "white",
                        markeredgecolor=style["color"], capsize=3, linewidth=1.2, linestyle="none", label=label)
            ax.annotate(str(point["label"]), (x, y), xytext=(6, 5), textcoords="offset points", fontsize=7, color="#333333")
    for ax, ylabel in zip(axes, ("forgetting (%) ↓ (Chaudhry)", "Last: final mean accuracy (%) ↑"), strict=True):
        ax.set_xlabel("learning accuracy (%) →\n(mean accuracy on each task right after learning it)")
        ax.set_ylabel(ylabel)
        ax.grid(color="#eeeeee")
        ax.set_xlim(-2, 102)
    axes[1].set_ylim(-2, 102)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07 + 0.04 * ((len(labels) - 1) // 5), 1, 1))
    return _save(fig, stem)


def _error(center: float, interval: object) -> np.ndarray | None:
    """``[[below], [above]]`` for ``errorbar`` from a ``(low, high)`` fraction interval around ``center`` (percent)."""
    if interval is None:
        return None
    low, high = interval  # type: ignore[misc]
    return np.array([[max(center - 100 * low, 0.0)], [max(100 * high - center, 0.0)]])
