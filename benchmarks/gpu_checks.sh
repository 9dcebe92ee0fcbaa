#!/usr/bin/env bash
# The checks that need a GPU, as one short run on the lent machine (about 5 minutes):
# CUDA ridge against numpy, torch_cuda ridge speed against the plain scikit-learn loop,
# probe throughput with bf16 extraction, and bf16-mixed training steps through the real CLI.
#
#   here:    bash benchmarks/gpu_wheels.sh
#   device:  run(command="bash benchmarks/gpu_checks.sh", carry=[".whl"], timeout_s=540)
# Output: the tail of each step, and the whole log in $OUT/gpu_checks.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_checks}
mkdir -p "$OUT"
LOG="$OUT/gpu_checks.log"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg

step() {
    local seconds=$1
    shift
    echo "== $*" | tee -a "$LOG"
    local start=$SECONDS
    timeout "$seconds" "$@" >>"$LOG" 2>&1
    local status=$?
    tail -n 12 "$LOG"
    echo "   exit $status, $((SECONDS - start)) s" | tee -a "$LOG"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$LOG"
step 120 python3 -m pytest -q -p no:cacheprovider tests/probe/test_ridge.py
step 150 python3 benchmarks/ridge_vs_sklearn.py --backend torch_cuda --n-stimuli 4000 \
    --n-features 768 --n-targets 20000 --repeats 1
step 150 python3 benchmarks/probe.py --backend torch_cuda --n-stimuli 2000 --n-fmri 20000 \
    --batch-size 250 --repeats 3 --skip-sklearn
step 150 python3 -m brainalign.cli fit --config configs/experiments/smoke.yaml \
    --trainer.accelerator gpu --trainer.precision bf16-mixed --trainer.max_steps 60 \
    --trainer.logger.init_args.save_dir "$OUT/runs" --data.batch_size 64
python3 - "$OUT/runs" <<'PY' | tee -a "$LOG"
import sys
from pathlib import Path
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
for events in sorted(Path(sys.argv[1]).rglob("events.out.tfevents.*")):
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    for tag in accumulator.Tags()["scalars"]:
        if "loss" in tag:
            values = [event.value for event in accumulator.Scalars(tag)]
            print(f"{tag}: first {values[0]:.4f} last {values[-1]:.4f} ({len(values)} points)")
PY
