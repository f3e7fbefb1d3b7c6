"""Training throughput of the RAM agent on GlimpseMNIST-v0: episodes and glimpses per second, and the env's share.

    python benchmarks/train_speed.py                              # every preset, 1 and 2 threads, fp32 (+ bf16)
    python benchmarks/train_speed.py --threads 1 --presets 100x100 --steps 3 --rounds 1 --loop-steps 0   # quick

For each preset (28x28 / 6 glimpses of 8x8; 60x60 translated / 4 glimpses of 12x12 x 3 scales; cluttered 60x60 and
100x100 / 8 glimpses; 128 images x M=10 slots a step) it times full training steps (rollout through the batched env,
hybrid loss, backward, clipping, Adam) through the trainer's default path, a canvas per slot (``--shared-canvas``:
one canvas per image instead), in float32 and, where bf16 is fast (CUDA, CPUs with AMX or AVX-512 BF16) or asked
for, in bf16 autocast, at each ``--threads`` count; it prints episodes/s, glimpses/s, the step's milliseconds and the
env's share of them (env alone: reset and the glimpses; forward, backward and Adam the rest). Comparators, in the
same process, timed in turns with the same configurations (each keeps its best of ``--rounds``):

* today's path: the env without its compiled CPU kernels (``glimpse_env.cpu_kernels.disabled``): canvases composed
  and summed by torch, glimpses gathered by torch, as before issue 19; the ratio is ours / today's;
* ``--loop-steps N``: the retina computed image by image in a Python loop (crop, pad, average-pool), the way
  per-sample retinas of public RAM implementations work (CPU, fp32);
* ``--compile``: the model's step compiled by ``torch.compile`` against eager, on our path.

The headline: 100x100 cluttered glimpses/s as a fraction of 28x28 / 6 glimpses' (target >= 0.65x at one thread, in
bf16 where the CPU has it), and the env's share of a cluttered step (target <= 20%).

    python benchmarks/train_speed.py --world-size 2    # scaling: 2 ranks x 1 thread vs 1 process x 2 threads

With ``--world-size N`` it measures, instead, how the trainer scales over processes on this machine (the 28x28
preset unless ``--presets`` names others; fp32): episodes/s of N ranks of one thread each (spawned, Gloo, the
trainer's own DDP step: its share of every batch, DDP's gradient all-reduce, clipping, Adam) against one process of
N threads training the same global batch, and their ratio, the scaling efficiency; and, for reference, one process
of one thread.

    python benchmarks/train_speed.py --cuda-graph --device cuda   # eager vs one CUDA graph, every preset

With ``--cuda-graph`` it times, instead, the trainer's own step (AdamW, clipping, the skip of a non-finite step,
the metric sums; fp32) three ways, side by side per preset: today's (the step before issue 30: host syncs on the
env's checks, at every glimpse's end test and for the skip), the capture-safe step run eagerly
(:class:`agents.training.step.DeviceStep`), and, on CUDA, that step captured once in a CUDA graph and replayed
(:class:`agents.training.cuda_graph.GraphedStep`, what the trainer runs there by default). On the CPU it shows that
the capture-safe step costs nothing there (no preset's step slower than today's in the same run).

    python benchmarks/train_speed.py --seeds 8 --device cuda --presets 28x28   # 8 seeds at once vs one seed

With ``--seeds N`` it times, instead, N seeds trained at once (the trainer's ``--seeds``: one vmapped step for all,
:mod:`agents.training.seeds`) against one seed's trainer step, on real trainers (MNIST needed): episodes/s of each
and their ratio (target on an H100: >= 5x at N = 8; on the CPU about 1x, where one seed already fills the cores).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

import glimpse_env  # noqa: F401
from agents import RAMConfig, RecurrentAttentionModel, hybrid_loss, run_episodes
from agents.training.config import TrainConfig
from agents.training.cuda_graph import GraphedStep
from agents.training.distributed import Distributed, init_distributed
from agents.training.precision import has_fast_bf16
from agents.training.seeds import SeedGroup
from agents.training.step import DeviceStep, EpisodeLoss, backward_and_clip, make_optimizer, wrap_for_ddp
from glimpse_env import cpu_kernels
from glimpse_env.data import TRAIN_SIZE
from glimpse_env.retina import location_to_pixel
from glimpse_env.vector_env import resolve_device

PRESETS = {
    "28x28, 6 glimpses, 8x8": dict(size=28, scales=1, glimpse_size=8, n_glimpses=6),
    "60x60, 4 glimpses, 12x12 x3": dict(size=60, scales=3, glimpse_size=12, n_glimpses=4),
    "cluttered 60x60, 8 glimpses, 12x12 x3": dict(size=60, scales=3, glimpse_size=12, n_glimpses=8, clutter=4),
    "cluttered 100x100, 8 glimpses, 12x12 x4": dict(size=100, scales=4, glimpse_size=12, n_glimpses=8, clutter=8),
}
EPOCH_EPISODES = TRAIN_SIZE * 10  # one epoch: every training image in M=10 slots


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
        indices = torch.randint(0, TRAIN_SIZE, (batch,), generator=generator).repeat_interleave(mc).to(device)
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
              repeats: int = 3) -> dict:
    """Milliseconds of one step spent in the env alone, the model's forward, backward and the optimizer."""
    indices = torch.randint(0, TRAIN_SIZE, (batch,)).repeat_interleave(mc).to(device)
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
    dist = init_distributed(10.0)
    device = torch.device("cpu")
    share = batch // world_size
    env = gym.make_vec("GlimpseMNIST-v0", num_envs=share * mc, device=device, **kwargs)
    env.reset(seed=rank)
    config = TrainConfig(**kwargs, batch_size=batch, mc_samples=mc)
    model, optimizer = fresh_model(RAMConfig.from_spaces(env.single_observation_space, env.single_action_space,
                                                         learn_first_location=True), device)
    step = wrap_for_ddp(EpisodeLoss(model, env, config.rl_weight), config, dist, device)
    params, generator = list(model.parameters()), torch.Generator().manual_seed(rank)

    def one_step() -> None:
        indices = torch.randint(0, TRAIN_SIZE, (share,), generator=generator).repeat_interleave(mc)
        loss, _ = step({"indices": indices, "slots_per_canvas": mc})
        optimizer.zero_grad(set_to_none=True)
        backward_and_clip(loss, params, config, dist)
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


PATHS = {"ours": contextlib.nullcontext, "today": cpu_kernels.disabled}  # today's: the torch path before issue 19
TARGET_RATIO, TARGET_ENV_SHARE = 0.65, 0.20


def measure_preset(args: argparse.Namespace, preset: str, device: torch.device, precisions: list[str]) -> dict:
    """{(threads, precision, path): (seconds per step, milliseconds of each part)}: every configuration timed in
    turn, ``args.rounds`` times, each keeping its best; then one breakdown each."""
    slots, mc = args.batch_size * args.mc_samples, args.mc_samples
    shared = mc if args.shared_canvas else 1
    env, config = preset_env(preset, slots, device)
    paths = list(PATHS) if device.type == "cpu" else ["ours"]  # CUDA has only the torch path
    thread_counts = args.threads if device.type == "cpu" else args.threads[:1]
    configs = [(threads, label, path) for threads in thread_counts for label in precisions for path in paths]
    best: dict = {}
    for _ in range(args.rounds):
        for threads, label, path in configs:
            torch.set_num_threads(threads)
            model, optimizer = fresh_model(config, device)
            with PATHS[path]():
                seconds = time_steps(model, env, optimizer, DTYPES[label], device, args.steps, args.batch_size, mc,
                                     shared)
            best[threads, label, path] = min(best.get((threads, label, path), float("inf")), seconds)
    results = {}
    for key in configs:
        torch.set_num_threads(key[0])
        model, optimizer = fresh_model(config, device)
        with PATHS[key[2]]():
            results[key] = best[key], breakdown(model, env, optimizer, DTYPES[key[1]], device, args.batch_size, mc,
                                                shared)
    if args.compile:
        compare_compiled(args, env, config, device, precisions, shared)
    if device.type == "cpu" and args.loop_steps > 0:
        torch.set_num_threads(args.threads[0])
        model, optimizer = fresh_model(config, device)
        loop = time_steps(model, LoopRetinaEnv(env), optimizer, None, device, args.loop_steps, args.batch_size, mc, 1)
        ours = results[args.threads[0], "fp32", "ours"][0] if "fp32" in precisions else None
        faster = f"; ours (fp32) is {loop / ours:.1f}x faster" if ours else ""
        print(f"[{device}] {preset}, comparator (per-sample loop retina, fp32, {args.threads[0]} thread(s)): "
              f"{slots / loop:,.0f} episodes/s{faster}")
    env.close()
    return results


def compare_compiled(args: argparse.Namespace, env, config: RAMConfig, device: torch.device, precisions: list[str],
                     shared: int) -> None:
    """Steps with the model's forward compiled by torch.compile (its backward too, through AOTAutograd) against
    eager, our env path, at the first thread count; compiling (the first steps) is not timed."""
    torch.set_num_threads(args.threads[0])
    slots, mc = args.batch_size * args.mc_samples, args.mc_samples
    for label in precisions:
        best = {}
        models = {mode: fresh_model(config, device) for mode in ("eager", "compiled")}
        models["compiled"][0].forward = torch.compile(models["compiled"][0].forward, dynamic=False)
        for _ in range(args.rounds):
            for mode, (model, optimizer) in models.items():
                seconds = time_steps(model, env, optimizer, DTYPES[label], device, args.steps, args.batch_size, mc,
                                     shared)
                best[mode] = min(best.get(mode, float("inf")), seconds)
        compiled, eager = slots / best["compiled"], slots / best["eager"]
        print(f"[{device}] torch.compile, {label}, {args.threads[0]} thread(s): compiled {compiled:,.0f} episodes/s, "
              f"eager {eager:,.0f}: compiled/eager {compiled / eager:.2f}x")


def report(preset: str, device: torch.device, results: dict, slots: int) -> None:
    n = PRESETS[preset]["n_glimpses"]
    for (threads, label, path), (seconds, parts) in results.items():
        if path != "ours":
            continue
        share = parts["env"] / sum(parts.values())
        line = (f"[{device}] {preset} | {label}, {threads} thread(s) | {slots / seconds:,.0f} episodes/s, "
                f"{n * slots / seconds:,.0f} glimpses/s, {EPOCH_EPISODES * seconds / slots:.1f} s/epoch; step "
                f"{1000 * seconds:.1f} ms: " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()) +
                f" ms (env {100 * share:.0f}%)")
        today = results.get((threads, label, "today"))
        if today is not None:
            today_share = today[1]["env"] / sum(today[1].values())
            line += (f" | today's path {slots / today[0]:,.0f} episodes/s, step {1000 * today[0]:.1f} ms, env "
                     f"{today[1]['env']:.1f} ms ({100 * today_share:.0f}%) | ours {today[0] / seconds:.2f}x")
        print(line, flush=True)


def headline(all_results: dict, slots: int, threads: int, precisions: list[str]) -> None:
    """100x100 cluttered glimpses/s against 28x28's, and the cluttered env shares, at ``threads``."""
    small, large = "28x28, 6 glimpses, 8x8", "cluttered 100x100, 8 glimpses, 12x12 x4"
    cluttered = [name for name in all_results if name.startswith("cluttered")]
    for label in precisions:
        parts = [f"headline ({label}, {threads} thread(s), a canvas per slot):"]
        for path in PATHS:
            try:
                rate = {name: PRESETS[name]["n_glimpses"] * slots / all_results[name][threads, label, path][0]
                        for name in (small, large)}
            except KeyError:
                continue
            ratio = rate[large] / rate[small]
            verdict = f" (target >= {TARGET_RATIO}x: {'met' if ratio >= TARGET_RATIO else 'MISSED'})" * (path == "ours")
            parts.append(f"{path}: 100x100 {rate[large]:,.0f} glimpses/s = {ratio:.2f}x 28x28's "
                         f"{rate[small]:,.0f}{verdict};")
        shares = {name: all_results[name][threads, label, "ours"][1] for name in cluttered
                  if (threads, label, "ours") in all_results[name]}
        shares = {name: part["env"] / sum(part.values()) for name, part in shares.items()}
        if shares:
            verdict = "met" if max(shares.values()) <= TARGET_ENV_SHARE else "MISSED"
            parts.append("env share of a step: " + ", ".join(f"{name.split(',')[0]} {100 * v:.0f}%"
                                                             for name, v in shares.items())
                         + f" (target <= {100 * TARGET_ENV_SHARE:.0f}%: {verdict})")
        print(" ".join(parts), flush=True)


DTYPES = {"fp32": None, "bf16": torch.bfloat16}
GRAPH_WARMUP = 5  # untimed steps: GraphedStep's 3 eager ones, its capture and a replay
NOISE = 0.03  # a CPU step's best of 3 rounds moves this much from run to run on a loaded 2-core machine


def best_in_turns(steps: dict[str, Callable[[torch.Tensor], object]], images: torch.Tensor, device: torch.device,
                  args: argparse.Namespace) -> dict[str, float]:
    """Seconds per step of each of ``steps`` (one call per batch of ``images``, GRAPH_WARMUP untimed first), timed
    in turns, each the best of ``args.rounds``."""
    best: dict = {}
    for _ in range(args.rounds):
        for name, one_step in steps.items():
            for batch in images[:GRAPH_WARMUP]:
                one_step(batch)
            synchronize(device)
            start = time.perf_counter()
            for batch in images[GRAPH_WARMUP:]:
                one_step(batch)
            synchronize(device)
            best[name] = min(best.get(name, float("inf")), (time.perf_counter() - start) / args.steps)
    return best


def capture_steps(preset: str, device: torch.device, args: argparse.Namespace) -> dict:
    """Seconds per trainer step of ``preset`` on ``device``: today's, the capture-safe step eagerly, and (CUDA) the
    capture-safe step in a CUDA graph; each the best of ``args.rounds``, timed in turns."""
    slots, mc = args.batch_size * args.mc_samples, args.mc_samples
    config = TrainConfig(**PRESETS[preset], batch_size=args.batch_size, mc_samples=mc,
                         shared_canvas=args.shared_canvas)
    dist = Distributed()
    images = torch.randint(0, TRAIN_SIZE, (GRAPH_WARMUP + args.steps, args.batch_size),
                           generator=torch.Generator().manual_seed(0)).to(device)  # on the device, as the trainer's

    def today() -> Callable[[torch.Tensor], None]:
        env, model_config = preset_env(preset, slots, device)
        model, _ = fresh_model(model_config, device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        loss_of, params = EpisodeLoss(model, env, config.rl_weight), list(model.parameters())
        totals = torch.zeros(5, device=device)

        def one_step(batch: torch.Tensor) -> None:
            nonlocal totals
            options = {"indices": batch.repeat_interleave(mc), "slots_per_canvas": mc if args.shared_canvas else 1}
            loss, episodes = loss_of(options)
            optimizer.zero_grad(set_to_none=True)
            norm = backward_and_clip(loss, params, config, dist)
            if dist.all_true(torch.isfinite(loss.total) & torch.isfinite(norm)):
                optimizer.step()
                parts = (loss.total, loss.cross_entropy, loss.baseline, loss.reinforce, episodes.reward.mean())
                totals += torch.stack([part.detach().float() for part in parts])

        return one_step

    def capture_safe(graph: bool) -> Callable[[torch.Tensor], None]:
        env, model_config = preset_env(preset, slots, device)
        model, _ = fresh_model(model_config, device)
        optimizer = make_optimizer(list(model.parameters()), config, device)
        step = DeviceStep(EpisodeLoss(model, env, config.rl_weight, trusted=True), model, optimizer, None, config,
                          dist, device, None)
        step.start_epoch()
        return GraphedStep(step, "on" if graph else "off", device, dist, env.unwrapped._generator)

    kinds = {"today": today, "capture-safe": lambda: capture_safe(False)}
    if device.type == "cuda":
        kinds["graph"] = lambda: capture_safe(True)
    steps = {name: make() for name, make in kinds.items()}
    best = best_in_turns(steps, images, device, args)
    if "graph" in steps and steps["graph"].status != "on":
        print(f"[{device}] {preset}: the graph did not run: {steps['graph'].status}")
    return best


def compare_capture(args: argparse.Namespace, chosen: list[str], devices: list[str]) -> None:
    """``--cuda-graph``: today's step, the capture-safe one eagerly, and (CUDA) in a graph, side by side."""
    slots = args.batch_size * args.mc_samples
    torch.set_num_threads(args.threads[0])
    for device_name in devices:
        device = resolve_device(device_name)
        slower = []
        for preset in chosen:
            best = capture_steps(preset, device, args)
            line = " | ".join(f"{name} {1000 * seconds:.1f} ms ({slots / seconds:,.0f} episodes/s)"
                              for name, seconds in best.items())
            versus = f"capture-safe/today {best['today'] / best['capture-safe']:.2f}x"
            if "graph" in best:
                versus += f", graph/eager {best['capture-safe'] / best['graph']:.2f}x"
            print(f"[{device}] {preset}, fp32, {args.batch_size} images x M={args.mc_samples}, "
                  f"{args.threads[0] if device.type == 'cpu' else 'GPU'} thread(s): {line} | {versus}", flush=True)
            if best["capture-safe"] > (1 + NOISE) * best["today"]:
                slower.append(preset)
        if device.type == "cpu":
            verdict = f"slower than today's: {'; '.join(slower)}" if slower else "no preset's step slower than today's"
            print(f"CPU: {verdict} in the same run (by more than {100 * NOISE:.0f}%, the noise of round to round)")


def seed_steps(preset: str, device: torch.device, args: argparse.Namespace, folder: Path) -> dict:
    """Seconds per step of one seed's trainer step (its default path: a CUDA graph on CUDA) and of ``args.seeds``
    seeds' shared step (:meth:`agents.training.seeds.SeedGroup.step`), each the best of ``args.rounds``, in turns.
    Real trainers (MNIST needed), fp32, set up in run folders under ``folder``."""
    configs = [TrainConfig(**PRESETS[preset], batch_size=args.batch_size, mc_samples=args.mc_samples,
                           shared_canvas=args.shared_canvas, seed=seed, device=str(device), precision="fp32",
                           epochs=1, figure=False, run_dir=str(folder / f"seed{seed}")) for seed in range(args.seeds)]
    group = SeedGroup(configs, [])
    group.start()
    trainers = group.trainers
    images = torch.randint(0, TRAIN_SIZE, (GRAPH_WARMUP + args.steps, args.batch_size),
                           generator=torch.Generator().manual_seed(0)).to(device)
    steps = {"one seed": lambda batch: trainers[0].run_step(batch),
             f"{args.seeds} seeds at once": lambda batch: group.step(trainers, [batch] * len(trainers))}
    try:
        return best_in_turns(steps, images, device, args)
    finally:
        for trainer in trainers:
            trainer.cleanup()


def compare_seeds(args: argparse.Namespace, chosen: list[str], devices: list[str]) -> None:
    """``--seeds N``: episodes/s of N seeds trained at once against one seed's, per preset, same run."""
    slots = args.batch_size * args.mc_samples
    torch.set_num_threads(args.threads[0])
    for device_name in devices:
        device = resolve_device(device_name)
        for preset in chosen:
            with tempfile.TemporaryDirectory() as folder:
                best = seed_steps(preset, device, args, Path(folder))
            one, group = best["one seed"], best[f"{args.seeds} seeds at once"]
            print(f"[{device}] {preset}, fp32, {args.batch_size} images x M={args.mc_samples} per seed: one seed "
                  f"{slots / one:,.0f} episodes/s ({1000 * one:.1f} ms/step); {args.seeds} seeds at once "
                  f"{args.seeds * slots / group:,.0f} episodes/s ({1000 * group:.1f} ms/step); "
                  f"ratio {args.seeds * one / group:.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="all", help="cpu, cuda, or all (CPU, and CUDA when present)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=2,
                        help="the configurations of a preset are timed in turn this many times; each keeps its best "
                             "round, so other load on the machine biases no one of them")
    parser.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts (CPU)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step")
    parser.add_argument("--mc-samples", type=int, default=10, help="M: slots per image")
    parser.add_argument("--shared-canvas", action="store_true",
                        help="the M slots of an image show one canvas (the trainer's --shared-canvas)")
    parser.add_argument("--loop-steps", type=int, default=2, help="timed steps of the per-sample-loop comparator")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the model against eager")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "both"), default="auto",
                        help="auto: fp32, and bf16 too where it is fast (CUDA, CPUs with AMX or AVX-512 BF16)")
    parser.add_argument("--presets", default=None,
                        help="comma-separated substrings of preset names (default all; with --world-size, 28x28)")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="time instead the trainer's step three ways: today's, capture-safe eagerly and (CUDA) "
                             "in one CUDA graph")
    parser.add_argument("--seeds", type=int, default=0,
                        help="time instead this many seeds trained at once (--seeds of the trainer) against one "
                             "seed, in episodes/s (real trainers: MNIST needed)")
    parser.add_argument("--world-size", type=int, default=0,
                        help="measure instead how training scales: this many ranks x 1 thread (DDP) against 1 "
                             "process x this many threads (CPU)")
    args = parser.parse_args()
    if args.world_size > 0:
        presets = args.presets or "28x28"
        scaling(args, [name for name in PRESETS if any(part.strip() in name for part in presets.split(","))])
        return
    args.threads = [int(part) for part in args.threads.split(",")]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "all" else [args.device]
    print(f"torch {torch.__version__}, CPU: {cpu_model()} ({os.cpu_count()} cores), threads {args.threads}, CPU "
          f"kernels {'on' if cpu_kernels.available() else 'OFF (numba missing)'}"
          + (f", GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""), flush=True)
    slots = args.batch_size * args.mc_samples
    chosen = [name for name in PRESETS if not args.presets or any(
        part.strip() in name for part in args.presets.split(","))]
    if args.cuda_graph:
        compare_capture(args, chosen, devices)
        return
    if args.seeds > 0:
        compare_seeds(args, chosen, devices)
        return
    for device_name in devices:
        device = resolve_device(device_name)
        precisions = {"fp32": ["fp32"], "bf16": ["bf16"], "both": ["fp32", "bf16"],
                      "auto": ["fp32", "bf16"] if has_fast_bf16(device) else ["fp32"]}[args.precision]
        all_results = {}
        for preset in chosen:
            all_results[preset] = measure_preset(args, preset, device, precisions)
            report(preset, device, all_results[preset], slots)
        for threads in args.threads if device.type == "cpu" else args.threads[:1]:
            headline(all_results, slots, threads, precisions)


if __name__ == "__main__":
    main()
