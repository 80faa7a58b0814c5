"""Fold the outputs of ``perf/gpu_check.sh`` into one ``summary.json`` and one ``summary.md``.

Reads, from the check's output folder: ``steps.tsv`` (one line per step: name, exit status,
seconds, log file), ``perf.json`` (``clbench perf``), ``clip.json`` (``perf/clip_step.py``) and
``coso.json`` (``perf/coso_step.py``); any of them may be missing (its step failed), which the
summary says. For every ``clbench perf`` shape and mode it reports ms/call and the fraction of the
roofline floor of each implementation, and the ratios of the fast paths (``triton``, ``cpu``) to
the eager reference and to peft; the CLIP and CoSO figures are copied as their scripts wrote them.

Usage::

    python perf/gpu_summary.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

FAST_PATHS = ("triton", "cpu")


def read_steps(out: Path) -> list[dict[str, Any]]:
    steps = []
    path = out / "steps.tsv"
    if path.exists():
        for line in path.read_text().splitlines():
            name, status, seconds, log = line.split("\t")
            steps.append({"step": name, "exit_status": int(status), "seconds": float(seconds), "log": log,
                          "result": "ok" if status == "0" else ("timed out" if status in ("124", "137") else "failed")})
    return steps


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def kernel_table(perf: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (shape, mode, impl): ms/call, × base, % of floor, and × eager / × peft for the fast paths."""
    by_key: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in perf["rows"]:
        by_key.setdefault((row["shape"], row["mode"]), {})[row["impl"]] = row
    table = []
    for (shape, mode), impls in by_key.items():
        for impl, row in impls.items():
            entry = {"shape": shape, "mode": mode, "impl": impl, "ms": None if row["seconds"] is None else row["seconds"] * 1e3,
                     "x_base": row["ratio_to_base"], "floor_fraction": row["floor_fraction"], "note": row.get("note", "")}
            for ref in ("eager", "peft"):
                other = impls.get(ref)
                if impl in FAST_PATHS and other and other["seconds"] and row["seconds"]:
                    entry[f"x_{ref}"] = row["seconds"] / other["seconds"]
            table.append(entry)
    return table


def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown(summary: dict[str, Any]) -> str:
    lines = ["# GPU check", "", f"- device: {summary.get('device', '?')}", f"- torch: {summary.get('torch', '?')}",
             f"- overall: **{'passed' if summary['passed'] else 'FAILED'}** ({summary['total_seconds']:.0f} s)", "",
             "| step | result | seconds | log |", "|---|---|---|---|"]
    lines += [f"| {s['step']} | {s['result']} ({s['exit_status']}) | {s['seconds']:.0f} | {s['log']} |" for s in summary["steps"]]
    if summary.get("kernels"):
        lines += ["", "## Rank-gated op (`clbench perf --device cuda --shapes all`)", "",
                  "ms/call, × the frozen base layer, % of the roofline floor `max(bytes/BW, FLOPs/peak)`, and the fast "
                  "paths against the eager reference and peft LoRA of the same rank (< 1 is faster).", "",
                  "| shape | mode | impl | ms/call | × base | % floor | × eager | × peft |", "|---|---|---|---|---|---|---|---|"]
        for r in summary["kernels"]:
            floor = None if r["floor_fraction"] is None else 100 * r["floor_fraction"]
            lines.append(f"| {r['shape']} | {r['mode']} | {r['impl']} | {fmt(r['ms'], '.3f')} | {fmt(r['x_base'], '.2f')} | "
                         f"{fmt(floor, '.1f')} | {fmt(r.get('x_eager'), '.2f')} | {fmt(r.get('x_peft'), '.2f')} |")
    clip = summary.get("clip")
    if clip:
        lines += ["", f"## CLIP training step (`perf/clip_step.py`, {clip['arch']}, batch {clip['batch']}, LoRA r {clip['rank']})", "",
                  "| amp | ms/step (median) | ms/step (min) |", "|---|---|---|"]
        lines += [f"| {r['amp']} | {r['wall_ms_median']:.1f} | {r['wall_ms_min']:.1f} |" for r in clip["rows"]]
    coso = summary.get("coso")
    if coso:
        lines += ["", "## CoSO (`perf/coso_step.py`)", ""]
        if coso.get("optimizer"):
            lines += ["Optimizer step, ms; refresh = randomized step − projection-only step.", "",
                      "| weight | preset | history | AdamW | full | randomized | refresh | full/AdamW | rand/AdamW | refresh/AdamW |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            lines += [f"| {r['shape']} | {r['preset']} | {r['history']} | {r['adamw_ms']:.3f} | {r['full_ms']:.2f} | {r['randomized_ms']:.2f} | "
                      f"{r['refresh_ms']:.2f} | {r['full_over_adamw']} | {r['randomized_over_adamw']} | {r['refresh_over_adamw']} |"
                      for r in coso["optimizer"]]
        for key, title in (("floor", "Pieces of one warm randomized refresh (ms and x AdamW)"), ("layers", "12 ViT-B layers in one group"),
                           ("train", "Whole training step, CoSO vs AdamW-LoRA")):
            if coso.get(key):
                lines += ["", f"{title}:", "", "```", *[json.dumps(r) for r in coso[key]], "```"]
    missing = [name for name in ("perf", "clip", "coso") if summary.get(f"{name}_missing")]
    if missing:
        lines += ["", f"Missing results (their step failed; see its log): {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def summarise(out: Path) -> dict[str, Any]:
    steps = read_steps(out)
    env = read_json(out / "env.json") or {}
    perf, clip, coso = read_json(out / "perf.json"), read_json(out / "clip.json"), read_json(out / "coso.json")
    summary: dict[str, Any] = {**env, "steps": steps, "passed": bool(steps) and all(s["exit_status"] == 0 for s in steps),
                               "total_seconds": sum(s["seconds"] for s in steps),
                               "kernels": kernel_table(perf) if perf else None, "clip": clip, "coso": coso,
                               "perf_missing": perf is None, "clip_missing": clip is None, "coso_missing": coso is None}
    if perf:
        summary["kernel_device_figures"] = perf.get("device_figures")
    return summary


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python perf/gpu_summary.py OUT_DIR")
    out = Path(sys.argv[1])
    summary = summarise(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    print(f"wrote {out / 'summary.json'} and {out / 'summary.md'}")


if __name__ == "__main__":
    main()
