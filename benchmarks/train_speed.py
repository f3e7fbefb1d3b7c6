"""Training throughput of the RAM agent on GlimpseMNIST-v0: sampled episodes per second and seconds per epoch.

    python benchmarks/train_speed.py                 # CPU (and CUDA when present)
    python benchmarks/train_speed.py --device cuda

For each preset (28x28 / 6 glimpses of 8x8; 60x60 / 4 glimpses of 12x12 x 3 scales; cluttered 60x60 and 100x100 / 8
glimpses; 128 images x M=10 slots, the M paths of an image over one canvas: the trainer's --shared-canvas) it times
full training steps (rollout through the batched env, hybrid loss, backward, Adam) in float32 and, where bf16 is
fast (CUDA, CPUs with AMX or AVX-512 BF16) or asked for, in bf16 autocast, and splits one step's time into env
(retina and reset), model forward, backward and optimizer. Comparators, run in the same process:

* the same step with the retina computed image by image in a Python loop (crop, pad, average-pool), the way
  per-sample retinas of public RAM implementations work (``--loop-steps``, CPU);
* on the cluttered presets, the same step with a canvas of its own for every slot (the trainer's default), in
  each precision: 10x the canvases to compose and sum per step.

    python benchmarks/train_speed.py --world-size 2    # scaling: 2 ranks x 1 thread vs 1 process x 2 threads

With ``--world-size N`` it measures, instead, how the trainer scales over processes on this machine (the 28x28
preset unless ``--presets`` names others; fp32): episodes/s of N ranks of one thread each (spawned, Gloo, the
trainer's own DDP step: its share of every batch, DDP's gradient all-reduce, clipping, Adam) against one process of
N threads training the same global batch, and their ratio, the scaling efficiency; and, for reference, one process
of one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

import glimpse_env  # noqa: F401
from agents import RAMConfig, RecurrentAttentionModel, hybrid_loss, run_episodes
from glimpse_env.retina import location_to_pixel
from glimpse_env.vector_env import resolve_device

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from ram_agent import has_fast_bf16  # noqa: E402  (the trainer's rule for when --precision auto means bf16)

PRESETS = {
    "28x28, 6 glimpses, 8x8": dict(size=28, scales=1, glimpse_size=8, n_glimpses=6),
    "60x60, 4 glimpses, 12x12 x3": dict(size=60, scales=3, glimpse_size=12, n_glimpses=4),
    "cluttered 60x60, 8 glimpses, 12x12 x3": dict(size=60, scales=3, glimpse_size=12, n_glimpses=8, clutter=4),
    "cluttered 100x100, 8 glimpses, 12x12 x4": dict(size=100, scales=4, glimpse_size=12, n_glimpses=8, clutter=8),
}
EPOCH_EPISODES = 55_000 * 10  # one epoch: every training image in M=10 slots


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class LoopRetinaEnv:
    """The batched env, but every glimpse cut image by image in Python: the comparator's retina."""

    def __init__(self, env) -> None:
        self.env, self.num_envs = env, env.num_envs

    def reset(self, options=None):
        observation, info = self.env.reset(options=options)
        self.canvases = self.env.unwrapped.canvases.float() / 255.0
        return self._looped(observation), info

    def step(self, action):
        observation, *rest = self.env.step(action)
        return (self._looped(observation), *rest)

    def _looped(self, observation):
        config = self.env.unwrapped.config
        g, k, size = config.glimpse_size, config.scales, config.size
        pad = g * 2 ** (k - 1)
        centres = location_to_pixel(observation["location"], size, size).tolist()
        patches = []
        for canvas, (cx, cy) in zip(self.canvases, centres, strict=True):
            padded = F.pad(canvas, (pad, pad, pad, pad))
            scales = []
            for i in range(k):
                side = g * 2**i
                x0, y0 = cx - side // 2 + pad, cy - side // 2 + pad
                crop = padded[y0:y0 + side, x0:x0 + side]
                scales.append(F.avg_pool2d(crop[None, None], 2**i)[0, 0])
            patches.append(torch.stack(scales))
        return {"glimpse": torch.stack(patches), "location": observation["location"]}


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_steps(model, env, optimizer, autocast_dtype, device, steps: int, batch: int, mc: int, shared: int) -> float:
    """Seconds per training step, averaged over ``steps`` after two warm-up steps."""
    generator = torch.Generator().manual_seed(0)

    def one_step() -> None:
        indices = torch.randint(0, 55_000, (batch,), generator=generator).repeat_interleave(mc).to(device)
        options = {"indices": indices, "slots_per_canvas": shared}
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = hybrid_loss(run_episodes(model, env, options))
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    for _ in range(2):
        one_step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def breakdown(model, env, optimizer, autocast_dtype, device, batch: int, mc: int, shared: int,
              repeats: int = 5) -> dict:
    """Milliseconds of one step spent in the env alone, the model's forward, backward and the optimizer."""
    indices = torch.randint(0, 55_000, (batch,)).repeat_interleave(mc).to(device)
    options = {"indices": indices, "slots_per_canvas": shared}
    zeros = {"location": torch.zeros(env.num_envs, 2, device=device),
             "prediction": torch.zeros(env.num_envs, 10, device=device)}
    n = env.unwrapped.config.n_glimpses
    times = {"env": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        env.reset(options=options)
        for _ in range(n):
            env.step(zeros)
        synchronize(device)
        t1 = time.perf_counter()
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = hybrid_loss(run_episodes(model, env, options))
        synchronize(device)
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        synchronize(device)
        t3 = time.perf_counter()
        optimizer.step()
        synchronize(device)
        t4 = time.perf_counter()
        times["env"] += t1 - t0
        times["forward"] += (t2 - t1) - (t1 - t0)  # the rollout minus the env's own share
        times["backward"] += t3 - t2
        times["optimizer"] += t4 - t3
    return {key: 1000 * value / repeats for key, value in times.items()}


def preset_env(preset: str, slots: int, device: torch.device) -> tuple[gym.vector.VectorEnv, RAMConfig]:
    """The training env of ``preset`` (seeded) and the model config the trainer would build for it."""
    env = gym.make_vec("GlimpseMNIST-v0", num_envs=slots, device=device, **PRESETS[preset])
    env.reset(seed=0)
    config = RAMConfig.from_spaces(env.single_observation_space, env.single_action_space, learn_first_location=True)
    return env, config


def fresh_model(config: RAMConfig, device: torch.device) -> tuple[RecurrentAttentionModel, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = RecurrentAttentionModel(config).to(device)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def ddp_worker(rank: int, port: int, world_size: int, kwargs: dict, batch: int, mc: int, steps: int, rounds: int,
               out: str) -> None:
    """One rank (one thread) of the scaling measurement: the trainer's DDP training step on its share of each batch;
    rank 0 writes the best round's seconds per step."""
    os.environ.update(WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    import ram_agent

    dist = ram_agent.init_distributed(10.0)
    device = torch.device("cpu")
    share = batch // world_size
    env = gym.make_vec("GlimpseMNIST-v0", num_envs=share * mc, device=device, **kwargs)
    env.reset(seed=rank)
    config = ram_agent.TrainConfig(**kwargs, batch_size=batch, mc_samples=mc)
    model, optimizer = fresh_model(RAMConfig.from_spaces(env.single_observation_space, env.single_action_space,
                                                         learn_first_location=True), device)
    step = ram_agent.wrap_for_ddp(ram_agent.EpisodeLoss(model, env, config.rl_weight), config, dist, device)
    params, generator = list(model.parameters()), torch.Generator().manual_seed(rank)

    def one_step() -> None:
        indices = torch.randint(0, 55_000, (share,), generator=generator).repeat_interleave(mc)
        loss, _ = step({"indices": indices, "slots_per_canvas": mc})
        optimizer.zero_grad(set_to_none=True)
        ram_agent.backward_and_clip(loss, params, config, dist)
        optimizer.step()

    best = float("inf")
    for _ in range(rounds):
        for _ in range(2):
            one_step()
        torch.distributed.barrier()
        start = time.perf_counter()
        for _ in range(steps):
            one_step()
        torch.distributed.barrier()  # a step is done when the slowest rank is
        best = min(best, (time.perf_counter() - start) / steps)
    if dist.main:
        Path(out).write_text(json.dumps(best))
    dist.close()


def scaling(args: argparse.Namespace, chosen: list[str]) -> None:
    """N ranks x 1 thread against 1 process x N threads, the same global batch; see the module's docstring."""
    world, slots, mc = args.world_size, args.batch_size * args.mc_samples, args.mc_samples
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} must be a multiple of --world-size {world}")
    device = torch.device("cpu")
    for preset in chosen:
        env, config = preset_env(preset, slots, device)
        best = {}  # threads: seconds per step of one process
        for _ in range(args.rounds):
            for threads in (world, 1):
                torch.set_num_threads(threads)
                model, optimizer = fresh_model(config, device)
                seconds = time_steps(model, env, optimizer, None, device, args.steps, args.batch_size, mc, mc)
                best[threads] = min(best.get(threads, float("inf")), seconds)
        single = best[world]
        with tempfile.TemporaryDirectory() as folder, socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            sock.close()
            out = str(Path(folder) / "seconds.json")
            mp.spawn(ddp_worker, args=(port, world, PRESETS[preset], args.batch_size, mc, args.steps, args.rounds, out),
                     nprocs=world, join=True)
            ranks = json.loads(Path(out).read_text())
        env.close()
        print(f"[cpu] {preset}, fp32, {args.batch_size} images x M={mc} a step: 1 process x {world} threads "
              f"{slots / single:,.0f} episodes/s; {world} ranks x 1 thread (DDP, Gloo) {slots / ranks:,.0f} "
              f"episodes/s; scaling efficiency {single / ranks:.2f} (ranks / threads); CPU: {cpu_model()}, "
              f"{os.cpu_count()} cores")
        print(f"    reference: 1 process x 1 thread {slots / best[1]:,.0f} episodes/s; the {world} ranks are "
              f"{best[1] / ranks:.2f}x that (ideal {world}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="all", help="cpu, cuda, or all (CPU, and CUDA when present)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=2,
                        help="the configurations of a preset are timed in turn this many times; each keeps its best "
                             "round, so other load on the machine biases no one of them")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step")
    parser.add_argument("--mc-samples", type=int, default=10, help="M: slots per image")
    parser.add_argument("--loop-steps", type=int, default=2, help="timed steps of the per-sample-loop comparator")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "both"), default="auto",
                        help="auto: fp32, and bf16 too where it is fast (CUDA, CPUs with AMX or AVX-512 BF16)")
    parser.add_argument("--presets", default=None,
                        help="comma-separated substrings of preset names (default all; with --world-size, 28x28)")
    parser.add_argument("--world-size", type=int, default=0,
                        help="measure instead how training scales: this many ranks x 1 thread (DDP) against 1 "
                             "process x this many threads (CPU)")
    args = parser.parse_args()
    if args.world_size > 0:
        presets = args.presets or "28x28"
        scaling(args, [name for name in PRESETS if any(part.strip() in name for part in presets.split(","))])
        return
    args.presets = args.presets or "all"
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "all" else [args.device]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU: {cpu_model()}"
          + (f", GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    slots, mc = args.batch_size * args.mc_samples, args.mc_samples
    chosen = [name for name in PRESETS if args.presets == "all" or any(
        part.strip() in name for part in args.presets.split(","))]
    dtypes = {"fp32": None, "bf16": torch.bfloat16}
    for device_name in devices:
        device = resolve_device(device_name)
        precisions = {"fp32": ["fp32"], "bf16": ["bf16"], "both": ["fp32", "bf16"],
                      "auto": ["fp32", "bf16"] if has_fast_bf16(device) else ["fp32"]}[args.precision]
        for preset in chosen:
            kwargs = PRESETS[preset]
            env, config = preset_env(preset, slots, device)
            # (label, autocast dtype, slots per canvas): one canvas per image (--shared-canvas), and on the cluttered
            # presets a canvas per slot (the trainer's default), in each precision.
            variants = [(label, dtypes[label], mc) for label in precisions]
            if kwargs.get("clutter", 0):
                variants += [(f"{label}, a canvas per slot", dtypes[label], 1) for label in precisions]
            best: dict[str, float] = {}
            for _ in range(args.rounds):
                for label, dtype, shared in variants:
                    model, optimizer = fresh_model(config, device)
                    seconds = time_steps(model, env, optimizer, dtype, device, args.steps, args.batch_size, mc,
                                         shared)
                    best[label] = min(best.get(label, float("inf")), seconds)
            for label, dtype, shared in variants:
                seconds = best[label]
                model, optimizer = fresh_model(config, device)
                parts = breakdown(model, env, optimizer, dtype, device, args.batch_size, mc, shared)
                share = ", ".join(f"{k} {v:.1f} ms" for k, v in parts.items())
                print(f"[{device}] {preset}, {label}: {slots / seconds:,.0f} episodes/s, "
                      f"{EPOCH_EPISODES * seconds / slots:.1f} s/epoch (M=10); one step {1000 * seconds:.1f} ms: "
                      f"{share} (env {100 * parts['env'] / sum(parts.values()):.0f}% of the step)")
            if kwargs.get("clutter", 0):
                for label in precisions:
                    ratio = best[f"{label}, a canvas per slot"] / best[label]
                    print(f"[{device}] {preset}: one canvas per image is {ratio:.2f}x the episodes/s of a canvas per "
                          f"slot ({label}, same run)")
            fastest = min(best[label] for label in precisions)
            if device.type == "cpu" and args.loop_steps > 0:
                model, optimizer = fresh_model(config, device)
                loop = time_steps(model, LoopRetinaEnv(env), optimizer, None, device, args.loop_steps,
                                  args.batch_size, mc, 1)
                print(f"[{device}] {preset}, comparator (per-sample loop retina, fp32): {slots / loop:,.0f} "
                      f"episodes/s; ours is {loop / fastest:.1f}x faster")
            if preset.startswith("28x28") and device.type == "cpu":
                verdict = "met" if slots / fastest >= 20_000 else "MISSED"
                print(f"    target >= 20,000 episodes/s (M=10 epoch < 30 s): {verdict}")
            env.close()


if __name__ == "__main__":
    main()
