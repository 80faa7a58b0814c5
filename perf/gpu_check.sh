#!/usr/bin/env bash
# One-command GPU check of clbench, unattended, within ~8 minutes:
#   1. the gpu-marked tests (pytest -m gpu: Triton kernels compiled on CUDA, CoSO on cuSOLVER);
#   2. clbench perf --device cuda --shapes all --json  (rank-gated op: base, eager, peft, torch fast path, Triton);
#   3. perf/clip_step.py on CUDA (CLIP ViT-B/16 LoRA training step, fp32 and bf16);
#   4. perf/coso_step.py on CUDA (CoSO optimizer step, its refresh, 12 ViT-B layers, whole training steps);
# then perf/gpu_summary.py folds them into OUT/summary.json and OUT/summary.md (ms/call, fraction of the
# roofline floor, ratios vs the eager reference and peft). Every step has a timeout and all steps share a
# budget of GPU_CHECK_BUDGET seconds (default 470); a failing or timed-out step is recorded and the
# script goes on, then exits 1. Without CUDA it refuses with one line and exit status 2, writing nothing.
#
# Usage:  perf/gpu_check.sh [OUT_DIR]          (default: $OUT, else gpu-check-<date>)
# Python: $PYTHON, else ./.venv/bin/python, else python3; clbench is (re)installed into it from this
#         checkout if it is missing or points elsewhere (offline first: pip install --no-deps -e .).
# Testing the script without a GPU: GPU_CHECK_DEVICE=cpu runs every step on the CPU at smoke-test sizes.
# Expected runtime on one H100/H200: about 4-5 minutes (an estimate; see docs/kernels.md).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)

die() { echo "gpu_check: $*" >&2; exit 2; }

DEVICE=${GPU_CHECK_DEVICE:-cuda}
BUDGET=${GPU_CHECK_BUDGET:-470}
case "$DEVICE" in cuda|cpu) ;; *) die "GPU_CHECK_DEVICE must be cuda or cpu (a CPU dry run), got '$DEVICE'" ;; esac
case "$BUDGET" in ''|*[!0-9]*) die "GPU_CHECK_BUDGET must be a number of seconds, got '$BUDGET'" ;; esac

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x .venv/bin/python ]; then PY=$ROOT/.venv/bin/python
else PY=$(command -v python3 || command -v python) || die "no python interpreter found (set PYTHON)"
fi
command -v timeout >/dev/null || die "the timeout command (coreutils) is missing"
"$PY" -c "import torch" 2>/dev/null || die "torch does not import in $PY; install the project first (scripts/setup-env) or set PYTHON"

# Refuse before touching the disk: a GPU check without a GPU would only produce misleading numbers.
if [ "$DEVICE" = cuda ]; then
    why=$("$PY" -c "import torch; print(f'torch {torch.__version__}, CUDA build {torch.version.cuda}, {torch.cuda.device_count()} device(s) visible')" 2>&1 | tail -n 1)
    "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
        || die "no CUDA device available to $PY ($why); this check needs a GPU, nothing was run"
fi

OUT_DIR=${1:-${OUT:-gpu-check-$(date +%Y%m%d-%H%M%S)}}
mkdir -p "$OUT_DIR" || die "cannot create the output folder $OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
STEPS=$OUT_DIR/steps.tsv
: > "$STEPS"
START=$(date +%s)
FAILED=()

# run_step NAME TIMEOUT COMMAND...: runs under min(TIMEOUT, budget left), logs to OUT/NAME.log, records a line.
run_step() {
    local name=$1 limit=$2 left t0 rc
    shift 2
    left=$(( BUDGET - ($(date +%s) - START) ))
    if [ "$left" -lt 15 ]; then
        printf '%s\t%d\t%d\t%s\n' "$name" 124 0 "(not run: the ${BUDGET}s budget was spent)" >> "$STEPS"
        FAILED+=("$name")
        echo "gpu_check: $name not run, the time budget is spent" >&2
        return 124
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "gpu_check: $name (at most ${limit}s) ..."
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
    rc=$?
    printf '%s\t%d\t%d\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$name.log" >> "$STEPS"
    if [ "$rc" -ne 0 ]; then
        FAILED+=("$name")
        echo "gpu_check: $name failed (exit $rc; last lines of $OUT_DIR/$name.log below)" >&2
        tail -n 5 "$OUT_DIR/$name.log" | sed 's/^/    /' >&2
    fi
    return "$rc"
}

# clbench from this checkout, installed offline if possible (the GPU machine may have no network).
installed_here() {
    "$PY" -c "import clbench, pathlib, sys; sys.exit(0 if pathlib.Path(clbench.__file__).resolve().parent.parent == pathlib.Path(sys.argv[1]).resolve() else 1)" "$ROOT" 2>/dev/null
}
if ! installed_here; then
    run_step install 120 "$PY" -m pip install --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT"
fi
missing=$("$PY" -c "
import importlib.util as u
print(' '.join(p for m, p in (('pytest', 'pytest'), ('peft', 'peft'), ('timm', 'timm'), ('open_clip', 'open-clip-torch')) if u.find_spec(m) is None))")
if [ -n "$missing" ]; then
    # shellcheck disable=SC2086
    run_step install-extras 90 "$PY" -m pip install --disable-pip-version-check --retries 1 --timeout 15 $missing
fi

"$PY" - "$OUT_DIR/env.json" "$DEVICE" <<'PYEOF' || die "cannot write $OUT_DIR/env.json"
import json, platform, subprocess, sys, time
import torch
out, device = sys.argv[1], sys.argv[2]
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or None
json.dump({"device": torch.cuda.get_device_name(0) if device == "cuda" else f"CPU dry run ({platform.processor() or platform.machine()})",
           "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(), "commit": commit,
           "dry_run": device != "cuda", "started": time.strftime("%Y-%m-%dT%H:%M:%S")}, open(out, "w"), indent=2)
PYEOF

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
CLI=("$PY" -c "import sys; from clbench.cli import main; sys.exit(main(sys.argv[1:]))")
if [ "$DEVICE" = cuda ]; then
    IMPLS=base,eager,peft,cpu,triton,triton-noskip
    [ "${GPU_CHECK_COMPILED:-0}" = 1 ] && IMPLS=$IMPLS,compiled  # torch.compile adds ~20 s per shape and mode
    run_step gpu-tests 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests
    run_step kernels-perf 150 "${CLI[@]}" perf --device cuda --shapes all --impl "$IMPLS" --json "$OUT_DIR/perf.json"
    run_step clip-step 90 "$PY" perf/clip_step.py --device cuda --arch ViT-B-16 --batch 64 --amp none,bf16 --warmup 2 --steps 5 \
        --json "$OUT_DIR/clip.json"
    run_step coso-step 150 "$PY" perf/coso_step.py --device cuda --parts optimizer,floor,layers,train --vitb-batch 64 --reps 5 --json "$OUT_DIR/coso.json"
else  # the same steps at smoke-test sizes on the CPU (gpu tests skip themselves without CUDA)
    run_step gpu-tests 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_coso_optimizer.py
    run_step kernels-perf 120 "${CLI[@]}" perf --device cpu --shapes tiny --impl base,eager,peft,cpu --repeats 1 --rounds 1 \
        --json "$OUT_DIR/perf.json"
    run_step clip-step 120 "$PY" perf/clip_step.py --device cpu --arch ViT-B-32 --batch 2 --amp none --warmup 0 --steps 1 \
        --json "$OUT_DIR/clip.json"
    run_step coso-step 150 "$PY" perf/coso_step.py --device cpu --parts optimizer,floor,layers,train --shapes 96x64 --presets cifar100 --history 16 --vitb-batch 0 \
        --reps 1 --steps 1 --json "$OUT_DIR/coso.json"
fi

timeout 60 "$PY" perf/gpu_summary.py "$OUT_DIR" || FAILED+=("summary")
total=$(( $(date +%s) - START ))
if [ "${#FAILED[@]}" -gt 0 ]; then
    echo "gpu_check: FAILED after ${total}s: ${FAILED[*]} (summary: $OUT_DIR/summary.md)" >&2
    exit 1
fi
echo "gpu_check: all steps passed in ${total}s; summary: $OUT_DIR/summary.md"
