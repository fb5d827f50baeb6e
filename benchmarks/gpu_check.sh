#!/usr/bin/env bash
# The GPU path exercised in a few minutes (issue 12, item 4), from the repository root:
#
#   benchmarks/gpu_check.sh DATA_DIR [OUT_DIR]             # on a GPU machine (OUT_DIR default runs/gpu-check)
#   benchmarks/gpu_check.sh DATA_DIR OUT_DIR --cpu-tiny    # the same steps, tiny, on the CPU: checks the script
#
# DATA_DIR is the CIFAR-10 JPEG copy (train/<class>/, test/<class>/), e.g. data/cifar10-jpeg. Steps:
#   1. the test suite's `gpu` tests (bf16 autocast + channels-last sparse training, attacks CUDA vs CPU);
#   2. `robustsparse run`: CIFAR-10 (JPEG) ResNet-20 dense + Campfire 70% (element) for a few epochs,
#      on the device-resident decoded dataset (data.device_cache=true), then the attack sweep on the GPU;
#   3. `torchrun --nproc_per_node=1 -m robustsparse train` (nccl) of the same models for one epoch;
#   4. benchmarks/gpu_throughput.py: training images/s and attack examples/s of robustsparse next to a
#      plain PyTorch loop on the same model, batch and precision, and the epoch against pure compute.
# Everything lands in OUT_DIR: logs of each step, throughput.json and summary.md (paste into
# benchmarks/RESULTS.md). The script stops at the first failing step (its log says why).
set -euo pipefail

DATA=${1:?usage: benchmarks/gpu_check.sh DATA_DIR [OUT_DIR] [--cpu-tiny]}
OUT=${2:-runs/gpu-check}
MODE=${3:-}
if [[ -x .venv/bin/python ]]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python}; fi
mkdir -p "$OUT"

if [[ "$MODE" == "--cpu-tiny" ]]; then
  DEVICE=cpu
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  RUN_SETTINGS=(--set data.train_examples=64 --set data.test_examples=64 --set data.num_workers=0
                --set train.epochs=1 --set train.batch_size=32 --set sparsity.end_epoch=1
                --set attack.n_examples=32 --set attack.sanity_checks=false
                --set "attack.specs=[{name: fgsm, eps: [8/255]}, {name: pgd, eps: [8/255], steps: 2}]")
  TORCHRUN_SETTINGS=(--set data.train_examples=64 --set data.test_examples=64 --set data.num_workers=0
                     --set train.batch_size=32)
  THROUGHPUT=(--tiny)
else
  DEVICE=cuda
  RUN_SETTINGS=(--set train.epochs=5 --set sparsity.end_epoch=2 --set data.num_workers=8
                --set "attack.specs=[{name: fgsm, eps: [1/255, 2/255, 4/255, 8/255]}, {name: pgd, eps: [1/255, 2/255, 4/255, 8/255], steps: 10}, {name: square, eps: [8/255], steps: 1000}, {name: pgd, eps: [64/255], steps: 10}, {name: noise, eps: [8/255]}, {name: fgsm, eps: ['0']}]")
  TORCHRUN_SETTINGS=(--set data.num_workers=8)
  THROUGHPUT=()
fi
# The data and the grid of both runs: dense (+ its continued control) and Campfire 70% element.
GRID=(--set data.dataset=imagefolder --set "data.root=$DATA" --set "data.label=CIFAR-10 (JPEG)"
      --set sparsity.method=campfire --set "sparsity.granularity=[element]" --set "sparsity.target_sparsity=[0.7]")

step() {  # step NAME COMMAND...: run, log to OUT/NAME.log, record its wall time
  local name=$1; shift
  echo "== $name: $*" | tee "$OUT/$name.log"
  local tic=$SECONDS
  "$@" >>"$OUT/$name.log" 2>&1 || { echo "FAILED: $name (see $OUT/$name.log)"; tail -20 "$OUT/$name.log"; exit 1; }
  echo "$name $((SECONDS - tic))" >>"$OUT/step_seconds.txt"
  echo "   done in $((SECONDS - tic)) s"
}

: >"$OUT/step_seconds.txt"
{ nvidia-smi || echo "no nvidia-smi"; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"; } >"$OUT/environment.txt" 2>&1
step 1-gpu-tests "$PY" -m pytest -q -m gpu -p no:cacheprovider -rs tests
step 2-cifar10-run "$PY" -m robustsparse run configs/cifar10-resnet20.yaml --out "$OUT/cifar10" --device "$DEVICE" \
  --no-progress --restart "${GRID[@]}" --set data.device_cache=true "${RUN_SETTINGS[@]}"
step 3-torchrun "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m robustsparse train \
  configs/cifar10-resnet20.yaml --out "$OUT/torchrun" --device "$DEVICE" --no-progress --restart "${GRID[@]}" \
  --set train.epochs=1 --set sparsity.end_epoch=1 "${TORCHRUN_SETTINGS[@]}"
step 4-throughput "$PY" benchmarks/gpu_throughput.py --data "$DATA" --device "$DEVICE" --out "$OUT/throughput.json" \
  "${THROUGHPUT[@]}"

# summary.md: step times, the run's epochs (seconds and accuracy) and headline, the throughput tables
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
import pandas as pd

out = Path(sys.argv[1])
lines = ["# GPU check", "", "| step | wall s |", "| --- | ---: |"]
lines += [f"| {name} | {s} |" for name, s in (l.split() for l in (out / "step_seconds.txt").read_text().splitlines())]
lines += ["", "## robustsparse run (device cache): epochs", "", "| model | epoch | epoch s | test acc |", "| --- | ---: | ---: | ---: |"]
for log in sorted((out / "cifar10" / "models").glob("*/train_log.csv")):
    for row in pd.read_csv(log).itertuples():
        lines.append(f"| {log.parent.name} | {row.epoch} | {row.epoch_seconds:.2f} | {row.test_acc:.4f} |")
results = pd.read_csv(out / "cifar10" / "results.csv")
table = results.pivot_table(index="key", columns="model_id", values="accuracy")
lines += ["", "## attack sweep (accuracy)", "", "| key | " + " | ".join(table.columns) + " |", "| --- |" + " ---: |" * len(table.columns)]
lines += [f"| {key} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for key, row in table.iterrows()]
lines += ["", "## throughput (benchmarks/gpu_throughput.py)", "", "```", json.dumps(json.loads((out / "throughput.json").read_text()), indent=1), "```"]
(out / "summary.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines[:4 + 4]))
EOF
echo "summary: $OUT/summary.md"
