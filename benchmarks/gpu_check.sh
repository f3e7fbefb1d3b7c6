#!/usr/bin/env bash
# The checks that need a GPU, in one run of at most 8 minutes (each stage under its own timeout; a stage that runs
# out says so and the next one starts): the CUDA tests (the CUDA-graph ones among them), the trainer's step eager
# against one CUDA graph for every preset, the quick start's epoch time with and without the graph, a CUDA run killed
# in epoch 2 and resumed against one that ran straight (graphs on: the random streams must go on exactly), and 2
# ranks under torchrun (NCCL with a GPU per rank; on one GPU Gloo, so the step runs eagerly). Logs go to
# ${OUT:-gpu-check}/, summary.txt first.
#
# A GPU machine may hold only the checkout (no ../shared) and reach no package index (../shared/notes/gpu.md). So,
# here, before the run, into folders that .gitignore keeps out of git (carry them to the machine):
#   mkdir -p .mnist && cp ../shared/data/MNIST/raw/*.gz .mnist/
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     gymnasium farama-notifications stable-baselines3 sb3-contrib pygame array-api-compat
# then: bash benchmarks/gpu_check.sh   (with the device tool: carry [".mnist", ".whl"])
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"; mkdir -p "$out"
summary="$out/summary.txt"
say() { echo "$*" | tee -a "$summary"; }
# A stage: its seconds, its name, its command; its log in $out/NAME.log, its exit status in the summary.
stage() {
    local seconds=$1 name=$2; shift 2
    say "== $name (at most ${seconds}s)"
    local start=$SECONDS
    timeout -k 10 "$seconds" "$@" > "$out/$name.log" 2>&1
    local status=$?
    [ $status -eq 124 ] && say "   (stopped at its ${seconds}s limit)"
    say "   exit $status after $((SECONDS - start))s"
    return $status
}

if [ -d .mnist ]; then export GLIMPSE_MNIST_DIR="$PWD/.mnist"; fi
export GLIMPSE_MNIST_DIR="${GLIMPSE_MNIST_DIR:-$PWD/../shared/data/MNIST/raw}" SDL_VIDEODRIVER=dummy PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! python -c "import gymnasium" 2>/dev/null && ls .whl/*.whl > /dev/null 2>&1; then  # no index there: the wheels
    python -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
python -c "import torch, gymnasium; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$summary"

# 1. The CUDA tests (tests/test_capture.py: a graphed run against an eager one, the fallback message), 110 s.
stage 110 cuda-tests python -m pytest -q -rs -p no:cacheprovider tests -k "cuda"
tail -n 8 "$out/cuda-tests.log" | tee -a "$summary"

# 2. The trainer's step: today's, capture-safe eager and one CUDA graph, every preset, 90 s.
stage 90 speed-graph python benchmarks/train_speed.py --device cuda --cuda-graph --steps 20 --rounds 2
grep -E "^\[cuda\]" "$out/speed-graph.log" | tee -a "$summary"

# 3. The quick start (python train/ram_agent.py, CUDA by default): its first epochs with the graph, then without.
stage 70 quickstart-graph python train/ram_agent.py --run-dir /tmp/gpu-quick-graph
stage 45 quickstart-eager python train/ram_agent.py --cuda-graph off --run-dir /tmp/gpu-quick-eager
grep -hE "^epoch|capture failed" "$out/quickstart-graph.log" "$out/quickstart-eager.log" | tee -a "$summary"

# 4. Killed in epoch 2 and resumed (graphs on) against a straight run: every epoch's metrics equal, 95 s in all.
tiny="--preset cluttered60-8g --train-subset 2048 --batch-size 64 --val-subset 1000 --test-mc 0 --no-figure \
--device cuda --epochs 3"
rm -rf /tmp/gpu-straight /tmp/gpu-killed
resume_check() {
    python train/ram_agent.py $tiny --run-dir /tmp/gpu-straight > "$out/straight.log" 2>&1
    python train/ram_agent.py $tiny --run-dir /tmp/gpu-killed > "$out/killed.log" 2>&1 &
    local pid=$!
    while [ "$(grep -c '^epoch' "$out/killed.log" 2>/dev/null)" -lt 1 ] && kill -0 $pid 2>/dev/null; do sleep 0.5; done
    sleep 1; kill -9 $pid; wait $pid 2>/dev/null
    python train/ram_agent.py --resume /tmp/gpu-killed >> "$out/killed.log" 2>&1
    python - <<'PY'
import json
timings = {"epoch_seconds", "train_episodes_per_second", "wall_seconds"}
a, b = ([{k: v for k, v in json.loads(line).items() if k not in timings} for line in open(f"/tmp/gpu-{run}/metrics.jsonl")]
        for run in ("straight", "killed"))
print("epochs straight", [m["epoch"] for m in a], "killed+resumed", [m["epoch"] for m in b])
print("val errors straight", [m["val_error"] for m in a], "killed+resumed", [m["val_error"] for m in b])
print("every metric equal:", a == b, "| cuda_graph:", json.load(open("/tmp/gpu-killed/results.json"))["cuda_graph"])
PY
}
export -f resume_check; export out tiny
stage 95 kill-resume bash -c resume_check
tail -n 3 "$out/kill-resume.log" | tee -a "$summary"

# 5. Two ranks: NCCL with 2+ GPUs (graphs on), else Gloo sharing the one GPU (eager), 55 s.
stage 55 torchrun torchrun --standalone --nproc_per_node=2 train/ram_agent.py $tiny --epochs 1 --run-dir /tmp/gpu-ranks
grep -E "backend|nccl|NCCL|capture|test error" "$out/torchrun.log" | tail -n 5 | tee -a "$summary"
say "total ${SECONDS}s"
