"""Does CoSO's randomized SVD change results? digits-split runs, full vs randomized, several seeds.

Runs ``clbench run digits-split -s coso`` on the default MLP and on ``vit:tiny`` for each seed and
each SVD setting — ``svd=full`` (the official code), ``svd=full align_signs=true`` (the full SVD
with the randomized path's sign alignment, which separates the two differences) and
``svd=randomized`` (warm start, batched) — and prints last accuracy, average incremental accuracy
and Chaudhry forgetting (%) as mean ± sample std over seeds, plus the mean paired difference to
``svd=full`` with its 95% t-interval (a difference whose interval holds 0 is not measurable at this
number of seeds). The digits-split budget is the benchmark file's (5 tasks, 5 epochs, batch 32,
lr 1e-3, generic preset r = 8, ℓ = 16).

Usage::

    python perf/coso_svd_accuracy.py                       # seeds 0-4, both backbones
    python perf/coso_svd_accuracy.py --seeds 0,1 --backbones vit:tiny --out /tmp/coso-svd
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

from clbench.runner import RunOptions, run

SETTINGS = {
    "full": {"svd": "full"},
    "full+align": {"svd": "full", "align_signs": "true"},
    "randomized": {"svd": "randomized"},
}
METRICS = (("last", "last_accuracy"), ("avg-inc", "average_incremental_accuracy"), ("forget", "forgetting_chaudhry"))
# Two-sided 95% t quantiles for n − 1 degrees of freedom.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def one_run(backbone: str | None, setting: str, seed: int, out: Path, reuse: bool) -> dict[str, float]:
    root = out / (backbone or "default").replace(":", "-") / setting
    done = root / "digits-split" / "coso" / f"seed-{seed}" / "results.json"
    if reuse and done.exists() and json.loads(done.read_text()).get("status") == "complete":
        return {name: 100 * json.loads(done.read_text())["metrics"][key] for name, key in METRICS}
    run(RunOptions(benchmark="digits-split", strategy="coso", overrides=dict(SETTINGS[setting]), backbone=backbone, seed=seed,
                   out=root, device="cpu", overwrite=True, progress=False))
    results = json.loads((root / "digits-split" / "coso" / f"seed-{seed}" / "results.json").read_text())
    return {name: 100 * results["metrics"][key] for name, key in METRICS}


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):6.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:5.2f}"


def paired(diffs: list[float]) -> str:
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return f"{mean:+6.2f}"
    half = T95.get(len(diffs) - 1, 1.96) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return f"{mean:+6.2f} [{mean - half:+6.2f}, {mean + half:+6.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--backbones", default="default,vit:tiny", help="comma list; default = the benchmark's MLP")
    parser.add_argument("--out", default="", help="run folder (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="read finished runs already in --out instead of running them again")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out or tempfile.mkdtemp(prefix="coso-svd-"))
    for backbone_name in args.backbones.split(","):
        backbone = None if backbone_name == "default" else backbone_name
        scores = {setting: [one_run(backbone, setting, seed, out, args.reuse) for seed in seeds] for setting in SETTINGS}
        print(f"\ndigits-split, coso, backbone {backbone_name}, seeds {args.seeds} (mean ± std; Δ: paired mean [95% CI])")
        print(f"{'setting':<12} " + " ".join(f"{name:>15}" for name, _ in METRICS))
        for setting, rows in scores.items():
            print(f"{setting:<12} " + " ".join(f"{mean_std([r[name] for r in rows]):>15}" for name, _ in METRICS))
        for setting, reference in (("full+align", "full"), ("randomized", "full"), ("randomized", "full+align")):
            deltas = " ".join(f"{paired([r[name] - f[name] for r, f in zip(scores[setting], scores[reference])]):>26}" for name, _ in METRICS)
            print(f"Δ {setting} − {reference:<10} {deltas}", flush=True)


if __name__ == "__main__":
    main()
