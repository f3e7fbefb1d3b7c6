"""Memory of the batched GlimpseMNIST env at a large size: does resident memory stay flat over many steps?

Steps ``--num-envs`` episodes (default 65,536 on 100x100 cluttered canvases: 4 scales of 12x12, 8 glimpses, 8
distractors) with uniformly random actions for ``--steps`` steps, crossing an autoreset every ``n_glimpses + 1``
steps, and reports the process's resident memory (RSS): after the env is built and reset, after the first 10 steps
(every buffer has been allocated once by then), after all steps, and the peak (``resource.getrusage``). A leak shows
as growth between the 10th and the last step; the peak is what the machine must hold.

    python benchmarks/env_memory.py                              # N = 65,536, 1,000 steps, CPU (needs ~10 GiB)
    python benchmarks/env_memory.py --num-envs 4096 --steps 100 --fixture

Needs MNIST (``GLIMPSE_MNIST_DIR`` or ``--data-dir``), or ``--fixture`` to use the 300 test digits of the test suite.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import gymnasium as gym
import torch
from env_throughput import cpu_model, load_fixture

import glimpse_env

MIB = 2**20
EARLY_STEPS = 10  # every buffer (canvases, tables, the autoreset's) has been allocated once by then


def rss_mib() -> float:
    """The process's resident memory now (``VmRSS``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / MIB
    raise RuntimeError("/proc/self/status has no VmRSS line (not Linux?)")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=65_536, help="episodes stepped together (default 65,536)")
    parser.add_argument("--steps", type=int, default=1_000, help="steps of random actions (default 1,000)")
    parser.add_argument("--device", default="cpu", help="device of the env: cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--scales", type=int, default=4)
    parser.add_argument("--glimpse-size", type=int, default=12)
    parser.add_argument("--n-glimpses", type=int, default=8)
    parser.add_argument("--clutter", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: GLIMPSE_MNIST_DIR, else download)")
    parser.add_argument("--fixture", action="store_true", help="use the test suite's 300 digits instead of MNIST")
    args = parser.parse_args()
    if args.steps <= EARLY_STEPS:
        parser.error(f"--steps must be more than {EARLY_STEPS}, to compare the memory after them with the end")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads")
    print(
        f"CPU: {cpu_model()} ({os.cpu_count()} logical cores); load average before the run: "
        + " ".join(f"{load:.2f}" for load in os.getloadavg())
    )
    start_rss = rss_mib()
    kwargs = dict(
        size=args.size,
        scales=args.scales,
        glimpse_size=args.glimpse_size,
        n_glimpses=args.n_glimpses,
        clutter=args.clutter,
    )
    digits = {"digits": load_fixture()} if args.fixture else {"data_dir": args.data_dir}
    env = gym.make_vec(glimpse_env.ENV_ID, num_envs=args.num_envs, device=args.device, **kwargs, **digits)
    device = env.unwrapped.device
    print(
        f"task: N={args.num_envs:,} on {device}, {args.size}x{args.size}, {args.scales} scales of "
        f"{args.glimpse_size}x{args.glimpse_size}, n_glimpses={args.n_glimpses}, clutter={args.clutter}, digits: "
        f"{'test fixture (300)' if args.fixture else 'MNIST train split'}; {args.steps:,} steps of random actions "
        f"(autoreset every {args.n_glimpses + 1} steps)"
    )

    generator = torch.Generator(device=device).manual_seed(0)
    prediction = torch.randn(args.num_envs, 10, generator=generator, device=device)
    env.reset(seed=0)
    after_reset = rss_mib()
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        location = torch.rand(args.num_envs, 2, generator=generator, device=device) * 2 - 1
        env.step({"location": location, "prediction": prediction})
        if step == EARLY_STEPS:
            early, early_seconds = rss_mib(), time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    final = rss_mib()

    rate = args.num_envs * (args.steps - EARLY_STEPS) / (seconds - early_seconds)
    print(
        f"time: {seconds:.1f} s for {args.steps:,} steps, {rate:,.0f} env-steps/s after the first {EARLY_STEPS} "
        f"(CPU: {cpu_model()})"
    )
    print(f"RSS before the env: {start_rss:,.0f} MiB; after building and reset: {after_reset:,.0f} MiB")
    print(
        f"RSS after {EARLY_STEPS} steps: {early:,.0f} MiB; after {args.steps:,} steps: {final:,.0f} MiB; "
        f"growth: {final - early:+,.1f} MiB"
    )
    print(f"peak RSS (getrusage): {peak_rss_mib():,.0f} MiB")
    if device.type == "cuda":
        print(f"peak CUDA memory allocated: {torch.cuda.max_memory_allocated(device) / MIB:,.0f} MiB")
    env.close()


if __name__ == "__main__":
    main()
