"""Glimpse-steps per second of GlimpseMNIST-v0: the natively batched env against a SyncVectorEnv of single envs.

A glimpse-step is one glimpse served to one episode; an episode serves ``n_glimpses`` of them. Each timed episode
is ``reset`` (canvas generation included) followed by ``n_glimpses`` steps (the last one grades the prediction), so
the figure is ``num_envs * n_glimpses * episodes / seconds``. Actions are drawn before timing starts.

    python benchmarks/env_throughput.py                  # CPU, N = 1024 and 4096, sync vector of 64 single envs
    python benchmarks/env_throughput.py --device cuda --sizes 4096 65536
    python benchmarks/env_throughput.py --size 100 --scales 4 --n-glimpses 8 --clutter 8 --compare-torch --sync-envs 0

On the CPU the env sums cluttered canvases and reads glimpses with compiled kernels (``glimpse_env.cpu_kernels``);
``--compare-torch`` also times the torch path they accelerate (the env before issue 19), in the same run.

Needs MNIST (``GLIMPSE_MNIST_DIR`` or ``--data-dir``), or ``--fixture`` to use the 300 test digits of the test suite.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import glimpse_env
from glimpse_env import cpu_kernels
from glimpse_env.data import DigitSet

TARGET_STEPS_PER_SECOND = 300_000  # at N = 4096 on the project's 2-core machine
TARGET_RATIO = 20.0  # batched (N = 4096) against the synchronous vector of single envs
FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "mnist_test_300.npz"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env_kwargs(args: argparse.Namespace, digits: DigitSet | None) -> dict:
    kwargs = {
        "size": args.size,
        "scales": args.scales,
        "glimpse_size": args.glimpse_size,
        "n_glimpses": args.n_glimpses,
        "clutter": args.clutter,
        "data_dir": args.data_dir,
    }
    if digits is not None:
        kwargs["digits"] = digits
    return kwargs


def time_episodes(run_episode, n_glimpses: int, num_envs: int, min_seconds: float, sync) -> tuple[float, int]:
    """Glimpse-steps per second over whole episodes, run for at least ``min_seconds`` after one warm-up."""
    run_episode()
    sync()
    episodes, start = 0, time.perf_counter()
    while True:
        run_episode()
        episodes += 1
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return num_envs * n_glimpses * episodes / elapsed, episodes


def batched_throughput(args: argparse.Namespace, num_envs: int, digits: DigitSet | None) -> tuple[float, int]:
    env = gym.make_vec(glimpse_env.ENV_ID, num_envs=num_envs, device=args.device, **env_kwargs(args, digits))
    device = env.unwrapped.device
    generator = torch.Generator(device=device).manual_seed(0)
    locations = [torch.rand(num_envs, 2, generator=generator, device=device) * 2 - 1 for _ in range(args.n_glimpses)]
    predictions = torch.randn(num_envs, 10, generator=generator, device=device)
    actions = [{"location": location, "prediction": predictions} for location in locations]

    def run_episode() -> None:
        env.reset()
        for action in actions:
            env.step(action)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    result = time_episodes(run_episode, args.n_glimpses, num_envs, args.seconds, sync)
    env.close()
    return result


def sync_vector_throughput(args: argparse.Namespace, digits: DigitSet | None) -> tuple[float, int]:
    env = gym.make_vec(
        glimpse_env.ENV_ID, num_envs=args.sync_envs, vectorization_mode="sync", **env_kwargs(args, digits)
    )
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    n = args.sync_envs
    predictions = rng.normal(size=(n, 10)).astype(np.float32)
    actions = [
        {"location": rng.uniform(-1, 1, (n, 2)).astype(np.float32), "prediction": predictions}
        for _ in range(args.n_glimpses)
    ]

    def run_episode() -> None:
        env.reset()
        for action in actions:
            env.step(action)

    result = time_episodes(run_episode, args.n_glimpses, n, args.seconds, lambda: None)
    env.close()
    return result


def load_fixture() -> DigitSet:
    with np.load(FIXTURE) as data:
        return DigitSet(torch.from_numpy(data["images"]), torch.from_numpy(data["labels"].astype(np.int64)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="device of the batched env: cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096], help="batched num_envs to time")
    parser.add_argument("--sync-envs", type=int, default=64, help="single envs in the SyncVectorEnv (0: skip)")
    parser.add_argument("--size", type=int, default=60)
    parser.add_argument("--scales", type=int, default=3)
    parser.add_argument("--glimpse-size", type=int, default=12)
    parser.add_argument("--n-glimpses", type=int, default=6)
    parser.add_argument("--clutter", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum timed seconds per configuration")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: GLIMPSE_MNIST_DIR, else download)")
    parser.add_argument("--fixture", action="store_true", help="use the test suite's 300 digits instead of MNIST")
    parser.add_argument("--compare-torch", action="store_true",
                        help="also time the batched env without its CPU kernels (the torch path)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    digits = load_fixture() if args.fixture else None
    print(f"torch {torch.__version__}, gymnasium {gym.__version__}, {torch.get_num_threads()} intra-op threads")
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores); CPU kernels "
          f"{'on' if cpu_kernels.available() else 'OFF (numba missing)'}")
    if hasattr(os, "getloadavg"):
        load = os.getloadavg()
        print("load average before the run: {:.2f} {:.2f} {:.2f}".format(*load))
        if load[0] > 0.5 * (os.cpu_count() or 1):
            print("WARNING: other work keeps the CPU busy; the figures below understate an idle machine's")
            print("         (with several intra-op threads especially: try --threads 1 to see the difference)")
    if torch.device(args.device).type == "cuda" and torch.cuda.is_available():
        print(f"GPU: {torch.cuda.get_device_name(torch.device(args.device))}")
    print(
        f"task: {args.size}x{args.size}, {args.scales} scales of {args.glimpse_size}x{args.glimpse_size}, "
        f"n_glimpses={args.n_glimpses}, clutter={args.clutter}, digits: "
        f"{'test fixture (300)' if args.fixture else 'MNIST train split'}; each episode = reset + n_glimpses steps"
    )
    print()

    batched = {}
    for num_envs in args.sizes:
        rate, episodes = batched_throughput(args, num_envs, digits)
        batched[num_envs] = rate
        target = f"   (target >= {TARGET_STEPS_PER_SECOND:,})" if num_envs == 4096 and args.device == "cpu" else ""
        label = f"batched env, N={num_envs:>6}, {args.device}:"
        print(f"{label:<34} {rate:>12,.0f} glimpse-steps/s ({episodes} episodes){target}")
        if args.compare_torch:
            with cpu_kernels.disabled():
                torch_rate, episodes = batched_throughput(args, num_envs, digits)
            label = f"  torch path, N={num_envs:>6}:"
            print(f"{label:<34} {torch_rate:>12,.0f} glimpse-steps/s ({episodes} episodes); kernels "
                  f"{rate / torch_rate:.2f}x")

    if args.sync_envs > 0:
        sync_rate, episodes = sync_vector_throughput(args, digits)
        label = f"SyncVectorEnv, N={args.sync_envs} single envs:"
        print(f"{label:<34} {sync_rate:>12,.0f} glimpse-steps/s ({episodes} episodes)")
        reference = 4096 if 4096 in batched else max(batched, default=None)
        if reference is not None:
            ratio = batched[reference] / sync_rate
            label = f"ratio batched(N={reference}) / sync(N={args.sync_envs}):"
            print(f"{label:<34} {ratio:>12,.1f}x   (target >= {TARGET_RATIO:.0f}x)")


if __name__ == "__main__":
    main()
