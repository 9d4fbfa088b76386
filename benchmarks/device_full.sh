#!/usr/bin/env bash
# The full benchmark on one GPU: 400 epochs, 5 unlearning seeds, 5 retrain seeds, every method.
#
# Usage (on the GPU machine, in the repository root, with scforget installed there):
#
#     bash benchmarks/device_full.sh                      # DC design, 3 baselines
#     FORGET="DC NK" BASELINE_SEEDS="0" bash benchmarks/device_full.sh
#
# Writes into $OUT (default benchmarks/results/device_full): the benchmark's tables, figures and
# report; gpu.txt (the device, driver and library versions); time.txt (wall time and peak memory of
# the whole run, from /usr/bin/time when available). Absolute times are the point of this run: the
# CPU benchmarks report ratios only. Expect hours for the defaults (3 baselines x every method x 5
# seeds, each a 400-epoch model); one baseline seed and one design is about a sixth of that.
# The model cache ($OUT/cache) lets an interrupted run resume without retraining.
set -euo pipefail
OUT=${OUT:-benchmarks/results/device_full}
FORGET=${FORGET:-DC}
BASELINE_SEEDS=${BASELINE_SEEDS:-0 1 2}
mkdir -p "$OUT"
python - <<'PY' > "$OUT/gpu.txt"
import torch, scvi, lightning, scforget
assert torch.cuda.is_available(), "no CUDA device: this script is for a machine with a GPU"
print("device:", torch.cuda.get_device_name(0))
print("memory GiB:", round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
print("torch", torch.__version__, "cuda", torch.version.cuda)
print("scvi-tools", scvi.__version__, "lightning", lightning.__version__, "scforget", scforget.__version__)
PY
cat "$OUT/gpu.txt"
# shellcheck disable=SC2086 # FORGET and BASELINE_SEEDS are lists of words
CMD=(scforget benchmark --accelerator gpu --epochs 400 --seeds 0 1 2 3 4 --retrain-seeds 0 1 2 3 4
  --baseline-seeds $BASELINE_SEEDS --forget $FORGET --cache "$OUT/cache" --out "$OUT")
start=$(date +%s)
if [ -x /usr/bin/time ]; then
  /usr/bin/time -v "${CMD[@]}" 2> >(tee "$OUT/time.txt" >&2)
else
  "${CMD[@]}"
fi
echo "wall_s=$(( $(date +%s) - start ))" >> "$OUT/time.txt"
