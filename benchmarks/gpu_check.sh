#!/usr/bin/env bash
# The checks that need a GPU, in one run (for a session lent one through the device tool; about 8 minutes):
# the CUDA tests, training speed on CUDA, a short CUDA training killed and resumed, and distributed training on
# CUDA: NCCL when there is a GPU per rank (2 or more GPUs); on one GPU NCCL refuses two ranks on one device, so the
# 2 ranks share it over Gloo (CUDA tensors). Figures and logs go to ${OUT:-gpu-check}/.
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"; mkdir -p "$out"
export GLIMPSE_MNIST_DIR="${GLIMPSE_MNIST_DIR:-$PWD/../shared/data/MNIST/raw}" SDL_VIDEODRIVER=dummy PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
tiny="--preset cluttered60-8g --train-subset 2048 --batch-size 64 --val-subset 1000 --test-mc 2 --no-figure --device cuda"

echo "== CUDA tests" | tee -a "$out/summary.txt"
python -m pytest -q -rs tests -k "cuda" 2>&1 | tail -n 15 | tee -a "$out/summary.txt"

echo "== training speed on CUDA" | tee -a "$out/summary.txt"
python benchmarks/train_speed.py --device cuda --steps 20 --loop-steps 0 2>&1 | tee -a "$out/summary.txt"

echo "== a CUDA run killed in epoch 2, resumed, against one that ran straight" | tee -a "$out/summary.txt"
rm -rf /tmp/gpu-straight /tmp/gpu-killed
python train/ram_agent.py $tiny --epochs 3 --run-dir /tmp/gpu-straight > "$out/straight.log" 2>&1
python train/ram_agent.py $tiny --epochs 3 --run-dir /tmp/gpu-killed > "$out/killed.log" 2>&1 &
pid=$!
while [ "$(grep -c '^epoch' "$out/killed.log" 2>/dev/null)" -lt 1 ]; do sleep 1; done
sleep 2; kill -9 $pid; wait $pid 2>/dev/null
python train/ram_agent.py --resume /tmp/gpu-killed >> "$out/killed.log" 2>&1
python - <<'PY' 2>&1 | tee -a "$out/summary.txt"
import json
a = [json.loads(l) for l in open("/tmp/gpu-straight/metrics.jsonl")]
b = [json.loads(l) for l in open("/tmp/gpu-killed/metrics.jsonl")]
print("epochs straight", [m["epoch"] for m in a], "killed+resumed", [m["epoch"] for m in b])
print("val errors straight", [m["val_error"] for m in a], "killed+resumed", [m["val_error"] for m in b])
PY

echo "== distributed on CUDA: 2 ranks (NCCL with 2+ GPUs, else Gloo sharing the one GPU)" | tee -a "$out/summary.txt"
torchrun --standalone --nproc_per_node=2 train/ram_agent.py $tiny --epochs 1 --run-dir /tmp/gpu-nccl \
    > "$out/nccl.log" 2>&1; echo "torchrun exit $?" | tee -a "$out/summary.txt"
grep -E "backend|nccl|NCCL|test error" "$out/nccl.log" | tail -n 5 | tee -a "$out/summary.txt"
