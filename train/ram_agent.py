"""Train the Recurrent Attention Model (Mnih et al. 2014) on GlimpseMNIST-v0, then report its test error.

    python train/ram_agent.py                              # 28x28 MNIST, 6 glimpses of 8x8 (the default preset)
    python train/ram_agent.py --preset translated60-4g     # 60x60 translated MNIST, 4 glimpses, 12x12 x 3 scales
    python train/ram_agent.py --resume runs/mnist28-6g-... # continue a run that was stopped
    torchrun --standalone --nproc_per_node=2 train/ram_agent.py --preset cluttered60-8g   # 2 processes (GPUs)
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 train/ram_agent.py ...

The agent learns through the env's batched vector env (the env is the data pipeline): every training image is shown
in M slots (each with a canvas of its own, or with --shared-canvas one canvas for the M), so the baseline and the
advantage see M sampled location paths of it; an epoch visits every training image once. The hybrid loss: cross-
entropy on the final class scores + MSE of the baseline against the reward + rl_weight * REINFORCE. Model selection
uses the validation split (the last 5,000 training digits); the test split is touched once, at the end, by the best
checkpoint.

A run folder holds config.json (the resolved configuration), metrics.jsonl (one line per epoch), best.pt and
last.pt (written atomically each epoch), results.json and a figure of the learned glimpse paths. last.pt is an
epoch's commit point: it is written first and holds what the epoch's other outputs need, and --resume makes
metrics.jsonl and best.pt agree with it, so a kill at any moment loses or repeats nothing.

Under torchrun the same script trains with N processes (ranks): each plays batch_size / N of every batch's images
in its own slice of the batched env, with random streams of its own, and DistributedDataParallel averages the
gradients; --batch-size stays the global batch, so every hyperparameter means the same at any N. Validation and
the test are split over the ranks too. Rank 0 alone writes the run folder and prints; --resume needs the same N.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, redirect_stdout
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

import glimpse_env  # noqa: F401  (registers GlimpseMNIST-v0)
from agents import HybridLoss, RAMConfig, RecurrentAttentionModel, evaluate, hybrid_loss, run_episodes, save_agent
from agents.checkpoint import read_checkpoint
from agents.rollout import Episodes
from glimpse_env.vector_env import resolve_device

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts, also when imported from tests
from evaluate import SPLIT_SIZES, evaluate_checkpoint, format_result  # noqa: E402


def option(default, help: str):  # noqa: A002  (argparse's word)
    return field(default=default, metadata={"help": help})


@dataclass
class TaskConfig:
    """The paper configuration and the GlimpseMNIST-v0 arguments it sets (a flag overrides any of them)."""

    preset: str = option("mnist28-6g", "paper configuration to start from (see --list-presets)")
    size: int = option(28, "canvas side in pixels (28: MNIST; 60/100: translated or cluttered)")
    scales: int = option(1, "retina scales k; scale i covers glimpse_size * 2**i pixels")
    glimpse_size: int = option(8, "side g of each g x g retina patch")
    n_glimpses: int = option(6, "glimpses per episode (= environment steps per episode)")
    clutter: int = option(0, "8x8 distractor crops per canvas")
    first_location: str = option("random", "where the first glimpse goes: random or center")

    def env_kwargs(self) -> dict:
        return dict(size=self.size, scales=self.scales, glimpse_size=self.glimpse_size,
                    n_glimpses=self.n_glimpses, clutter=self.clutter, first_location=self.first_location)


@dataclass
class TrainConfig(TaskConfig):
    """Every hyperparameter of a run; each one is also a command-line flag."""

    # the model (agents.RAMConfig)
    core: str = option("rnn", "recurrent core: rnn (the paper's ReLU RNN) or lstm")
    what_hidden: int = option(128, "units of the glimpse network's 'what' path")
    where_hidden: int = option(128, "units of the glimpse network's 'where' path")
    glimpse_out: int = option(256, "units of the glimpse network's output")
    core_size: int = option(256, "units of the recurrent core")
    loc_std: float = option(0.1, "standard deviation of the Gaussian location policy, on [-1, 1]")
    loc_std_final: float = option(0.0, "anneal the location policy's standard deviation linearly over the epochs, "
                                       "from loc_std in the first to this in the last (0: constant loc_std)")
    learn_first_location: bool = option(True, "the agent learns where its first glimpse goes (--no-learn-first-"
                                              "location: the env puts it at --first-location)")
    reinforce_core: bool = option(False, "REINFORCE trains the core and glimpse network too, not only the location "
                                         "head (the paper's full-network gradient)")
    # learning
    epochs: int = option(45, "passes over the 55,000 training images")
    batch_size: int = option(128, "images per gradient step (each shown in mc_samples slots), over all processes: "
                                  "under torchrun each of N processes plays batch_size / N of them, so the "
                                  "hyperparameters mean the same at any N")
    train_subset: int = option(0, "train on only the first N training images (0: all 55,000); for quick checks")
    mc_samples: int = option(10, "M: sampled location paths per training image")
    # Off by default: on validation, per-slot canvases learned faster at equal epochs (cluttered60-8g from scratch).
    shared_canvas: bool = option(False, "the M paths of an image look at one canvas (the paper's M samples of one "
                                        "episode; 1.2-1.7x faster on cluttered rows); default: each path gets its "
                                        "own translation and clutter")
    init_from: str = option("", "start from the weights of this checkpoint (same architecture and retina; the task "
                                "may differ: translated -> cluttered, fewer distractors -> more), not from a random "
                                "initialisation")
    lr: float = option(2e-3, "peak learning rate of Adam")
    lr_schedule: str = option("cosine", "cosine (warm-up, then cosine decay to lr_final) or constant")
    lr_final: float = option(1e-5, "learning rate at the end of the cosine schedule")
    warmup_epochs: float = option(0.5, "epochs of linear learning-rate warm-up")
    weight_decay: float = option(0.0, "Adam(W) weight decay")
    rl_weight: float = option(1.0, "weight of the REINFORCE term in the hybrid loss")
    ema_decay: float = option(0.0, "keep an exponential moving average of the weights with this decay per step "
                                   "(e.g. 0.999); validation, best.pt and the test then use the average, and "
                                   "the metrics also give the live weights' val_error_live (0: off)")
    grad_clip: float = option(5.0, "clip the gradient's global norm to this (0: no clipping)")
    clip_separately: bool = option(False, "clip the supervised gradient (cross-entropy + baseline) and the "
                                          "REINFORCE gradient to --grad-clip each, then add them (else one global "
                                          "norm: a large REINFORCE gradient shrinks the classifier's step)")
    max_nonfinite_steps: int = option(20, "a step whose loss or gradient is NaN/inf is skipped (and counted in the "
                                          "metrics); this many in a row stop the run")
    # evaluation
    val_mc: int = option(0, "K for Monte-Carlo validation error (0: deterministic policy only)")
    test_mc: int = option(10, "K for the final Monte-Carlo test error")
    eval_slots: int = option(5000, "episodes played at once during evaluation (by each process)")
    val_subset: int = option(0, "validate on only the first N validation images (0: all 5,000); for quick checks")
    # the run
    seed: int = option(0, "seed of everything random in the run")
    device: str = option("auto", "auto (CUDA when present), cpu or cuda")
    precision: str = option("auto", "bf16 (autocast), fp32, or auto: bf16 on CUDA and on CPUs with bf16 "
                                             "instructions (AMX or AVX-512 BF16)")
    run_dir: str = option("", "run folder (default: runs/<preset>-<time>)")
    data_dir: str = option("", "MNIST folder (default: $GLIMPSE_MNIST_DIR, else a download)")
    figure: bool = option(True, "draw the learned glimpse paths (PNG and GIF) into the run folder at the end")

    def model_kwargs(self) -> dict:
        return dict(core=self.core, what_hidden=self.what_hidden, where_hidden=self.where_hidden,
                    glimpse_out=self.glimpse_out, core_size=self.core_size, loc_std=self.loc_std,
                    learn_first_location=self.learn_first_location, reinforce_core=self.reinforce_core)


# The rows of the paper's table (Mnih et al. 2014, tables 1 and 2). Keys are TrainConfig fields. Precision is pinned,
# so a row trains the same on every CPU (both CPU kinds this project runs on have bf16 instructions).
MNIST28 = dict(size=28, scales=1, glimpse_size=8, clutter=0, precision="bf16")
TRANSLATED60 = dict(size=60, scales=3, glimpse_size=12, clutter=0, precision="bf16")
CLUTTERED60 = dict(TRANSLATED60, clutter=4)
CLUTTERED100 = dict(size=100, scales=4, glimpse_size=12, clutter=8, precision="bf16")
# The translated rows train in one long run: the full-network gradient and weight averaging from the start. Chosen on
# validation: 4 glimpses 0.86% in one 120-epoch run against 1.00% for five stages (195 epochs in all); 6 glimpses
# 1.08% against 1.14% for three stages (105 epochs). Their shipped checkpoints add a short stage (RECIPES).
ONE_LONG_RUN = dict(reinforce_core=True, ema_decay=0.999, epochs=120)
PRESETS: dict[str, dict] = {
    "mnist28-2g": dict(MNIST28, n_glimpses=2),
    "mnist28-3g": dict(MNIST28, n_glimpses=3),
    "mnist28-4g": dict(MNIST28, n_glimpses=4),
    "mnist28-5g": dict(MNIST28, n_glimpses=5),
    "mnist28-6g": dict(MNIST28, n_glimpses=6),
    "mnist28-7g": dict(MNIST28, n_glimpses=7),
    "translated60-4g": dict(TRANSLATED60, **ONE_LONG_RUN, n_glimpses=4),
    "translated60-6g": dict(TRANSLATED60, **ONE_LONG_RUN, n_glimpses=6),
    "translated60-8g": dict(TRANSLATED60, **ONE_LONG_RUN, n_glimpses=8),
    # The TensorFlow implementation's row: 4 glimpses of 8x8 at 3 scales (8, 16 and 32 pixels) on translated 60x60.
    "translated60-4g-8px": dict(TRANSLATED60, **ONE_LONG_RUN, glimpse_size=8, n_glimpses=4),
    "cluttered60-4g": dict(CLUTTERED60, n_glimpses=4),
    "cluttered60-6g": dict(CLUTTERED60, n_glimpses=6),
    "cluttered60-8g": dict(CLUTTERED60, n_glimpses=8),
    # REINFORCE into the core: chosen on validation, same init and schedule (17.26% detached vs 14.82% at epoch 11).
    "cluttered100-4g": dict(CLUTTERED100, n_glimpses=4, reinforce_core=True),
    "cluttered100-6g": dict(CLUTTERED100, n_glimpses=6, reinforce_core=True),
    "cluttered100-8g": dict(CLUTTERED100, n_glimpses=8, reinforce_core=True),
}
# How the shipped checkpoints of the rows that took more than one run were trained, one command each:
# `--recipe NAME` trains the stages in turn, each a run of its own (folder stage<i> of the recipe's run folder) that
# starts from the previous stage's best.pt; a stage's values override the preset's, flags given with --recipe
# override every stage's. Stage values are those each shipped stage ran with (its assets/runs/*/config.json).
# A later stage: the full-network gradient and the weight average, the schedule restarted at a lower peak.
LATER_STAGE = dict(reinforce_core=True, ema_decay=0.999, lr=5e-4, warmup_epochs=1)
RECIPES: dict[str, list[dict]] = {
    # The preset's one long run, then 40 epochs restarted at 5e-4: validation 0.80% against the long run's 0.86%.
    "translated60-4g": [dict(), dict(LATER_STAGE, epochs=40)],
    # Fewer glimpses -> more: the 4-glimpse row's one long run, then 40 epochs with 6 glimpses. Chosen on validation:
    # 0.78% against 1.08% for one 120-epoch 6-glimpse run and 1.14% for the earlier three stages.
    "translated60-6g": [dict(n_glimpses=4), dict(LATER_STAGE, epochs=40)],
    "cluttered60-8g": [dict(learn_first_location=False),
                       dict(reinforce_core=True, shared_canvas=True, epochs=50, lr=1e-3, warmup_epochs=1),
                       dict(LATER_STAGE, epochs=40), dict(LATER_STAGE, epochs=30), dict(LATER_STAGE, epochs=30)],
    "cluttered100-8g": [dict(learn_first_location=False, reinforce_core=False),
                        dict(shared_canvas=True, epochs=50, lr=1e-3, warmup_epochs=1),
                        dict(LATER_STAGE, epochs=50)],
}
# Fields a run folder written before they existed lacks, with the behaviour it was trained with.
ADDED_LATER = {"learn_first_location": False, "reinforce_core": False, "shared_canvas": False, "init_from": "",
               "val_subset": 0, "max_nonfinite_steps": 20, "clip_separately": False, "loc_std_final": 0.0,
               "ema_decay": 0.0}
# What may change when a run is resumed; everything else must match the run's config.json.
RESUMABLE_CHANGES = {"epochs", "device", "run_dir", "data_dir", "figure", "eval_slots", "max_nonfinite_steps"}
# Flags that must be at least this, checked before anything starts (a 0 would fail deep inside, naming no flag).
MINIMUMS = {"epochs": 1, "batch_size": 1, "mc_samples": 1, "train_subset": 0, "eval_slots": 1, "val_subset": 0,
            "val_mc": 0, "test_mc": 0, "max_nonfinite_steps": 1, "loc_std_final": 0.0}


def add_config_flags(parser: argparse.ArgumentParser, config_class: type, choices: dict[str, list]) -> None:
    """One ``--flag`` per field of a config dataclass, absent unless given (so presets can fill the gaps)."""
    for f in dataclasses.fields(config_class):
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (default: {f.default})"
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, choices=choices.get(f.name),
                                help=help_text)


def explicit_flags(args: argparse.Namespace, config_class: type) -> dict:
    """The config fields given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class) if hasattr(args, f.name)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
    parser.add_argument("--list-presets", action="store_true", help="print the presets and recipes and exit")
    parser.add_argument("--recipe", choices=list(RECIPES), help="train a row's whole recipe, stage after stage, in "
                        "RUN_DIR/stage1, stage2, ... (RUN_DIR: --run-dir, default runs/<recipe>-recipe); the same "
                        "command again continues it where it stopped")
    parser.add_argument("--dist-timeout-minutes", type=float, default=30.0,
                        help="under torchrun: a collective that some rank does not join within this fails, and the "
                             "job stops with an error, rather than hanging on a dead rank (default: 30)")
    add_config_flags(parser, TrainConfig, {"preset": list(PRESETS)})
    return parser


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the preset, then explicit flags; with --resume, the run's config with allowed changes."""
    explicit = explicit_flags(args, TrainConfig)
    if args.resume:
        saved_path = Path(args.resume) / "config.json"
        if not saved_path.is_file():
            raise SystemExit(f"--resume {args.resume}: no config.json there; is it a run folder?")
        saved = {**ADDED_LATER, **json.loads(saved_path.read_text())}
        changed = {k: (saved.get(k), v) for k, v in explicit.items() if saved.get(k) != v}
        refused = {k: pair for k, pair in changed.items() if k not in RESUMABLE_CHANGES}
        if refused:
            lines = ", ".join(f"{k}: run has {old!r}, asked {new!r}" for k, (old, new) in refused.items())
            raise SystemExit(f"--resume {args.resume}: refusing to continue with another configuration ({lines}). "
                             f"Only {sorted(RESUMABLE_CHANGES)} may change.")
        return TrainConfig(**{**saved, **explicit, "run_dir": str(args.resume)})
    preset = explicit.get("preset", TrainConfig.preset)
    return TrainConfig(**{**PRESETS[preset], **explicit, "preset": preset})


def pick_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain float32."""
    if precision not in ("auto", "bf16", "fp32"):
        raise SystemExit(f"--precision must be auto, bf16 or fp32; got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if has_fast_bf16(device) else None


def has_fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls are fast on ``device``: CUDA that supports them, or a CPU with bf16 instructions (AMX
    tiles on Xeons; AVX-512 BF16, e.g. on recent AMD EPYCs, where a training step ran 2.5-3.6x faster than in
    fp32). Elsewhere bf16 is emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no way to tell here, so fp32
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def location_std(config: TrainConfig, epoch: int) -> float:
    """The location policy's standard deviation in ``epoch`` (1-based): constant, or annealed linearly from
    ``loc_std`` in the first epoch to ``loc_std_final`` in the last."""
    if not config.loc_std_final:
        return config.loc_std
    progress = (epoch - 1) / max(1, config.epochs - 1)
    return config.loc_std + (config.loc_std_final - config.loc_std) * progress


def learning_rate_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of config.lr at optimizer step ``step``: linear warm-up, then cosine decay (or constant)."""
    warmup = max(1, round(config.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return (step + 1) / warmup
    if config.lr_schedule == "constant":
        return 1.0
    total = config.epochs * steps_per_epoch
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    final = config.lr_final / config.lr
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def check_flags(config: TrainConfig) -> None:
    """A clear error naming the flag, before anything starts, for values the run could not use."""
    for name, minimum in MINIMUMS.items():
        if getattr(config, name) < minimum:
            flag = "--" + name.replace("_", "-")
            raise SystemExit(f"{flag} must be >= {minimum}; got {getattr(config, name)}")
    if not 0.0 <= config.ema_decay < 1.0:
        raise SystemExit(f"--ema-decay must be in [0, 1) (0: off); got {config.ema_decay}")
    if config.lr_schedule not in ("cosine", "constant"):
        raise SystemExit(f"--lr-schedule must be cosine or constant; got {config.lr_schedule!r}")


def json_line(metrics: dict) -> str:
    """One line of strict JSON: a NaN or inf (not JSON) is written as null."""
    finite = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}
    return json.dumps(finite, allow_nan=False)


def rng_states(device: torch.device, order_generator: torch.Generator, env_generator: torch.Generator) -> dict:
    """Every random stream a run draws from, so that a resumed run goes on exactly where it stopped."""
    states = {"torch_rng": torch.get_rng_state(), "order_rng": order_generator.get_state(),
              "env_rng": env_generator.get_state()}
    if device.type == "cuda":  # sampled locations draw from the device's global generator
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(states: dict, device: torch.device, order_generator: torch.Generator,
                       env_generator: torch.Generator) -> None:
    """Set what :func:`rng_states` saved. torch takes a generator's state only as a CPU ByteTensor, whatever the
    generator's device (and a checkpoint read onto CUDA holds its tensors there)."""
    torch.set_rng_state(states["torch_rng"].cpu())
    order_generator.set_state(states["order_rng"].cpu())
    env_state = states["env_rng"].cpu()
    if env_state.numel() == env_generator.get_state().numel():
        env_generator.set_state(env_state)
    else:  # resumed on another kind of device: CPU and CUDA generators keep different states
        print("the run was saved on another kind of device; the env's random stream starts again from the seed")
    if device.type == "cuda" and "cuda_rng" in states:
        torch.cuda.set_rng_state(states["cuda_rng"].cpu(), device)


# ---------------------------------------------------------------- distributed (torchrun)
# One script for 1 process or many. torchrun sets WORLD_SIZE, RANK, LOCAL_RANK and LOCAL_WORLD_SIZE; without it
# (or with one process) there is no process group and nothing below does anything: a single process trains as it
# always did. Rank 0 alone touches the run folder; what it reads there is broadcast, so the other ranks need no
# shared file system.

T = TypeVar("T")


@dataclass
class Distributed:
    """Where this process stands in a torchrun job. Not a hyperparameter: one run may use 1 process or 64."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0  # picks this process's GPU
    local_world_size: int = 1  # processes on this machine: they share its cores
    backend: str = ""  # "gloo", or "cpu:gloo,cuda:nccl" when each rank has a GPU; "" without a process group

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def from_rank0(self, work: Callable[[], T]) -> T:
        """``work()`` on rank 0 (file work: once), its result sent to every rank. A refusal there (SystemExit) or
        an error stops every rank with its message, rather than leaving the others waiting for a broadcast."""
        if not self.active:
            return work()
        box: list[Any] = [None]
        failure: BaseException | None = None
        if self.main:
            try:
                box = [("ok", work())]
            except SystemExit as stop:
                box, failure = [("exit", stop.code)], stop
            except Exception as error:
                box, failure = [("exit", f"rank 0 failed: {type(error).__name__}: {error}")], error
        torch_dist.broadcast_object_list(box, src=0)
        if failure is not None:
            raise failure
        kind, value = box[0]
        if kind == "exit":
            raise SystemExit(value)
        return value

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks (in place; the tensor itself for one process)."""
        if self.active:
            torch_dist.all_reduce(tensor)
        return tensor

    def all_true(self, flag: torch.Tensor) -> bool:
        """Whether ``flag`` (a bool tensor) holds on every rank: they then take or skip a step together."""
        if not self.active:
            return bool(flag)
        value = flag.to(torch.int32).reshape(1)
        torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MIN)
        return bool(value)

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.active:
            return [value]
        values: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(values, value)
        return values

    def shard(self, items: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of ``items`` (the parts differ by at most one in length)."""
        return items.tensor_split(self.world_size)[self.rank] if self.active else items

    def close(self) -> None:
        if torch_dist.is_available() and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def init_distributed(timeout_minutes: float) -> Distributed:
    """Join the torchrun job this process was started in (a one-process Distributed() when there is none)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    if not timeout_minutes > 0:
        raise SystemExit(f"--dist-timeout-minutes must be > 0; got {timeout_minutes}")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    if "OMP_NUM_THREADS" not in os.environ:  # the machine's cores shared among its ranks, not each rank taking all
        torch.set_num_threads(max(1, available_cores() // local_world_size))
    if torch.cuda.is_available() and torch.cuda.device_count() >= local_world_size:
        torch.cuda.set_device(local_rank)
        # A failed NCCL collective (a rank died) raises instead of hanging; the timeout bounds the wait for it.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        backend = "cpu:gloo,cuda:nccl"  # CUDA tensors over NCCL; objects (configs, checkpoints) over Gloo
    else:
        backend = "gloo"
    # With a timeout, a collective that a dead rank never joins fails (and torchrun stops the job) instead of
    # waiting forever.
    torch_dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    return Distributed(world_size, rank, local_rank, local_world_size, backend)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's own random streams (env and location noise): rank 0 keeps the run's seed, so a single
    process is seeded as it always was; the others get streams of their own, derived from the seed and the rank."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0])


# ---------------------------------------------------------------- one training step


class EpisodeLoss(nn.Module):
    """Play a batch of episodes with ``model`` in ``env`` and return their hybrid loss (and the episodes).

    The RAM runs one forward per glimpse; DistributedDataParallel expects one forward per backward. Wrapped in DDP,
    this module is that one forward, and every parameter the episodes use, the learned first glimpse's too, is
    inside it, so each gets its gradient averaged."""

    def __init__(self, model: RecurrentAttentionModel, env: Any, rl_weight: float) -> None:
        super().__init__()
        self.model, self.env, self.rl_weight = model, env, rl_weight

    def forward(self, options: dict[str, Any]) -> tuple[HybridLoss, Episodes]:
        episodes = run_episodes(self.model, self.env, options)
        return hybrid_loss(episodes, self.rl_weight), episodes


def wrap_for_ddp(step: EpisodeLoss, config: TrainConfig, dist: Distributed, device: torch.device) -> nn.Module:
    """``step`` as the training loop calls it: itself for one process (today's path and speed) and under
    --clip-separately (which averages its two gradients itself, see backward_and_clip), else in DDP."""
    if not dist.active or config.clip_separately:
        return step
    # With one glimpse the location and baseline heads get no gradient at all: only then must DDP look for unused
    # parameters (a graph traversal every step).
    return DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=config.n_glimpses == 1)


def backward_and_clip(loss: HybridLoss, params: list[nn.Parameter], config: TrainConfig,
                      dist: Distributed) -> torch.Tensor:
    """Fill the parameters' gradients (averaged over ranks), clipped to --grad-clip; return the norm before
    clipping (NaN or inf if the gradient is not finite)."""
    clip = config.grad_clip or math.inf  # inf: measure the norm without clipping
    if not config.clip_separately:
        loss.total.backward()  # under DDP, averaged over the ranks as it runs
        return torch.nn.utils.clip_grad_norm_(params, clip)
    # REINFORCE's gradient kept apart, then the supervised one into .grad; each clipped, then added.
    reinforce = config.rl_weight * loss.reinforce
    if reinforce.requires_grad:
        rl_grads = torch.autograd.grad(reinforce, params, retain_graph=True, allow_unused=True)
    else:  # one glimpse and the env's first location: no location was chosen
        rl_grads = [None] * len(params)
    (loss.cross_entropy + loss.baseline).backward()
    parts = []
    for grads in ([p.grad for p in params], list(rl_grads)):
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
        if dist.active:  # no DDP in this mode: average each part over the ranks here, one flat all-reduce each
            flat = dist.sum(torch.cat([g.reshape(-1) for g in grads])) / dist.world_size
            grads = list(flat.split([g.numel() for g in grads]))
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = (clip / (norm + 1e-6)).clamp(max=1.0)  # as clip_grad_norm_ does
        parts.append(([g * scale for g in grads], norm))
    (supervised, supervised_norm), (rl, rl_norm) = parts
    for p, a, b in zip(params, supervised, rl, strict=True):
        p.grad = (a + b).view_as(p)
    return torch.linalg.vector_norm(torch.stack([supervised_norm, rl_norm]))


class Run:
    """A training run's folder: config, metrics, checkpoints.

    Every write is atomic (a temporary file renamed over the old one) and a failed one (disk full, read-only
    folder) is a clear error naming the file, with the previous version intact.
    """

    def __init__(self, config: TrainConfig, command: list[str], resume: bool) -> None:
        self.dir = Path(config.run_dir)
        self.metrics_path = self.dir / "metrics.jsonl"
        started = (self.dir / "config.json").is_file() or (self.dir / "last.pt").is_file()
        if started and not resume:  # else its last.pt would be continued with this command's flags unchecked
            raise SystemExit(f"{self.dir} already holds a run: continue it with --resume {self.dir}, or choose "
                             f"another --run-dir")
        with self.writing(self.dir):
            self.dir.mkdir(parents=True, exist_ok=True)
            for stray in self.dir.glob("*.tmp"):  # left by a kill during an atomic write
                stray.unlink()
        if not started:  # written once, by the first start (config.json last: it marks the run started)
            self.write_text("command.txt", " ".join(command) + "\n")
            self.write_text("config.json", json.dumps(asdict(config), indent=2) + "\n")
        self.writer = None  # TensorBoard too, when it is installed: opened by the first log

    @contextmanager
    def writing(self, path: Path) -> Iterator[None]:
        try:
            yield
        except OSError as error:
            then = f"continue with --resume {self.dir}" if (self.dir / "config.json").is_file() else "start again"
            raise SystemExit(f"could not write {path}: {error.strerror or error}. What was there before is intact; "
                             f"free some space (or make the folder writable), then {then}") from error

    def write_text(self, name: str, text: str) -> None:
        path = self.dir / name
        tmp = path.with_name(path.name + ".tmp")
        with self.writing(path):
            with tmp.open("w") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)

    def save(self, name: str, model: RecurrentAttentionModel, env_kwargs: dict, extra: dict) -> None:
        with self.writing(self.dir / name):
            save_agent(self.dir / name, model, env_kwargs, extra)

    def log(self, metrics: dict) -> None:
        with self.writing(self.metrics_path), self.metrics_path.open("a") as out:
            out.write(json_line(metrics) + "\n")
        if self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.dir / "tensorboard"))
            except Exception:
                self.writer = False
        if self.writer:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value) and key != "epoch":
                    self.writer.add_scalar(key, value, metrics["epoch"])
            self.writer.flush()

    def settle(self, payload: dict | None, model: RecurrentAttentionModel) -> None:
        """Make metrics.jsonl and best.pt agree with last.pt (``payload``; None before the first epoch was
        committed) and ``model`` (its weights): a kill between an epoch's writes leaves them behind or ahead."""
        extra = payload["extra"] if payload else {"state": {"epoch": 0}}
        epoch = extra["state"]["epoch"]
        rows = {}
        if self.metrics_path.is_file():
            for line in self.metrics_path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
                if isinstance(row, dict) and isinstance(row.get("epoch"), int) and row["epoch"] < epoch:
                    rows.setdefault(row["epoch"], row)
        if epoch:
            rows[epoch] = extra["metrics"]
        text = "".join(json_line(rows[e]) + "\n" for e in sorted(rows))
        if text != (self.metrics_path.read_text() if self.metrics_path.is_file() else ""):
            self.write_text(self.metrics_path.name, text)
        # best.pt is written after last.pt: when last.pt's epoch was the best, best.pt may still be older.
        if epoch and extra["state"].get("best_epoch") == epoch and checkpoint_epoch(self.dir / "best.pt") != epoch:
            self.save("best.pt", model, payload["env_kwargs"],
                      {"train_config": extra["train_config"], "metrics": extra["metrics"]})


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch a checkpoint written by this script holds (None: no such file, or not one of ours)."""
    try:
        return read_checkpoint(path)["extra"]["metrics"]["epoch"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def train(config: TrainConfig, command: list[str], resume: bool = False, dist: Distributed | None = None) -> dict:
    dist = dist or Distributed()
    check_flags(config)
    batch = config.batch_size // dist.world_size  # this rank's images of every batch
    if config.batch_size % dist.world_size:
        raise SystemExit(f"--batch-size {config.batch_size} does not split evenly over the {dist.world_size} "
                         f"processes of this torchrun job: choose a multiple of {dist.world_size} (it is the "
                         f"global batch, so the hyperparameters mean the same at any number of processes)")
    num_val = min(config.val_subset or SPLIT_SIZES["validation"], SPLIT_SIZES["validation"])
    if num_val < dist.world_size:
        raise SystemExit(f"--val-subset {num_val}: fewer validation images than the {dist.world_size} processes")
    device = resolve_device(config.device)
    if device.type == "cuda" and "nccl" in dist.backend:
        device = torch.device("cuda", dist.local_rank)
    autocast_dtype = pick_precision(config.precision, device)
    run: Run | None = None  # rank 0's

    def open_run() -> tuple[str, bool, dict | None]:
        nonlocal run
        if not config.run_dir:
            config.run_dir = f"runs/{config.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
        run = Run(config, command, resume)
        resuming = (run.dir / "last.pt").is_file()
        if resume and (run.dir / "results.json").is_file():
            finished = json.loads((run.dir / "results.json").read_text())
            if finished.get("epochs") == config.epochs:
                print(f"{run.dir} is finished ({config.epochs} epochs, results.json): nothing to do (a larger "
                      f"--epochs trains on)")
                return config.run_dir, resuming, finished
            if not resuming:
                raise SystemExit(f"{run.dir} is finished and has no last.pt to continue from")
        return config.run_dir, resuming, None

    config.run_dir, resuming, finished = dist.from_rank0(open_run)
    if finished is not None:
        return finished
    run_dir = Path(config.run_dir)
    torch.manual_seed(config.seed)
    seed = rank_seed(config.seed, dist.rank)  # this rank's env and location noise
    data_dir = config.data_dir or None
    env = gym.make_vec("GlimpseMNIST-v0", num_envs=batch * config.mc_samples, device=device, split="train",
                       data_dir=data_dir, **config.env_kwargs())
    val_images = dist.shard(torch.arange(num_val))
    val_env = gym.make_vec("GlimpseMNIST-v0", num_envs=min(config.eval_slots, len(val_images)), device=device,
                           split="validation", data_dir=data_dir, **config.env_kwargs())
    env.reset(seed=seed)
    num_train = len(env.unwrapped.digits)
    if config.train_subset:
        num_train = min(num_train, config.train_subset)
    model_config = RAMConfig.from_spaces(env.single_observation_space, env.single_action_space,
                                         **config.model_kwargs())
    model = RecurrentAttentionModel(model_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    # The averaged weights, when --ema-decay asks for them: updated after each step, they are what is validated,
    # kept as best.pt and tested. Set up after --init-from/the broadcast below, so they start from those weights.
    average: AveragedModel | None = None
    steps_per_epoch = math.ceil(num_train / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(config, step, steps_per_epoch))
    order_generator = torch.Generator().manual_seed(config.seed)  # the global order: the same on every rank
    env_generator = env.unwrapped._generator
    start_epoch, best_val, best_epoch, wall_before = 1, float("inf"), 0, 0.0
    if config.init_from and not resuming:  # on rank 0; the others get its weights below
        dist.from_rank0(lambda: initialise_from(model, config, Path(config.init_from), device))
    if dist.active:
        for tensor in model.state_dict().values():  # every rank starts from rank 0's weights
            torch_dist.broadcast(tensor, src=0)
        if not dist.main:
            torch.manual_seed(seed)  # rank 0's location noise goes on from the run's seed, as one process's does

    if config.ema_decay:
        average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
    payload = None
    if resuming:
        payload = dist.from_rank0(lambda: read_last_checkpoint(run_dir, config, device, dist))
        state = payload["extra"]["state"]
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["extra"]["optimizer"])
        scheduler.load_state_dict(payload["extra"]["scheduler"])
        if average is not None:
            average.load_state_dict(payload["extra"]["average"])
        start_epoch, best_val, wall_before = state["epoch"] + 1, state["best_val_error"], state["wall_seconds"]
        best_epoch = state.get("best_epoch", 0)  # 0: written before last.pt recorded it
        print(f"resuming {run_dir} at epoch {start_epoch} (best validation error {100 * best_val:.2f}%)")
    if resume:
        def settle() -> None:
            run.settle(payload, model)
            saved = json.loads((run.dir / "config.json").read_text())
            if saved["epochs"] != config.epochs:  # the one change a resume writes down
                run.write_text("config.json", json.dumps({**saved, "epochs": config.epochs}, indent=2) + "\n")
                print(f"config.json: epochs {saved['epochs']} -> {config.epochs}")

        dist.from_rank0(settle)
    if payload is not None:  # last: reading a checkpoint builds a model, which draws from torch's generator
        state = payload["extra"]["state"]
        own = state["ranks"][dist.rank] if dist.active else state
        restore_rng_states(own, device, order_generator, env_generator)

    step_module = wrap_for_ddp(EpisodeLoss(model, env, config.rl_weight), config, dist, device)
    params = list(model.parameters())
    started = time.perf_counter() - wall_before
    last_val_error = "-" if start_epoch == 1 else f"{100 * best_val:.2f}% (best)"
    bad_in_a_row = 0
    for epoch in range(start_epoch, config.epochs + 1):
        model.train()
        # The noise of this epoch's location samples; a checkpoint records the one its model was trained with last.
        model.config = dataclasses.replace(model.config, loc_std=location_std(config, epoch))
        epoch_start = time.perf_counter()
        order = torch.randperm(num_train, generator=order_generator)
        order = torch.cat([order, order[: steps_per_epoch * config.batch_size - num_train]])  # pad the last batch
        totals = torch.zeros(5, device=device)  # loss, its three terms, reward: summed on the device
        nonfinite = 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{config.epochs}", leave=False, mininterval=1.0,
                   disable=None if dist.main else True)
        for step in bar:
            images = order[step * config.batch_size:(step + 1) * config.batch_size]
            images = images[dist.rank * batch:(dist.rank + 1) * batch].to(device)  # this rank's share
            indices = images.repeat_interleave(config.mc_samples)
            options = {"indices": indices, "slots_per_canvas": config.mc_samples if config.shared_canvas else 1}
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                loss, episodes = step_module(options)
            optimizer.zero_grad(set_to_none=True)
            grad_norm = backward_and_clip(loss, params, config, dist)
            # Every rank takes or skips the step: a NaN loss on one rank alone must not split the weights.
            if dist.all_true(torch.isfinite(loss.total) & torch.isfinite(grad_norm)):
                optimizer.step()
                if average is not None:
                    average.update_parameters(model)
                parts = (loss.total, loss.cross_entropy, loss.baseline, loss.reinforce, episodes.reward.mean())
                totals += torch.stack([part.detach().float() for part in parts])
                bad_in_a_row = 0
            else:  # a NaN or inf must never reach the weights (nor Adam's moments): skip the step
                nonfinite += 1
                bad_in_a_row += 1
                if bad_in_a_row >= config.max_nonfinite_steps:
                    kept = f"{run_dir / 'last.pt'} (epoch {epoch - 1}) is intact" if epoch > 1 else "nothing was saved"
                    raise SystemExit(f"epoch {epoch}, step {step + 1}/{steps_per_epoch}: {bad_in_a_row} steps in a "
                                     f"row had a NaN or inf loss or gradient; stopping ({kept}). Try a lower --lr or "
                                     f"--grad-clip")
            scheduler.step()  # the schedule follows the step count, taken or skipped
            if step % 50 == 0 and dist.main:
                bar.set_postfix(loss=f"{loss.total.item():.3f}", reward=f"{episodes.reward.mean().item():.3f}",
                                val_error=last_val_error)
        train_seconds = time.perf_counter() - epoch_start

        kept = model  # the weights that are validated, kept as best.pt and tested
        if average is not None:
            kept = average.module
            kept.config = model.config  # this epoch's loc_std, recorded with the weights
            live = validate(model, val_env, val_images, num_val, config, seed, device, autocast_dtype, dist)
        val = validate(kept, val_env, val_images, num_val, config, seed, device, autocast_dtype, dist)
        means = (dist.sum(totals) / dist.world_size / (steps_per_epoch - nonfinite)).tolist()  # NaN if none: null
        metrics = {"epoch": epoch, **dict(zip(("loss", "cross_entropy", "baseline", "reinforce", "reward"), means,
                                              strict=True)),
                   "nonfinite_steps": nonfinite, "val_error": val["error"], "lr": scheduler.get_last_lr()[0],
                   "epoch_seconds": round(time.perf_counter() - epoch_start, 2),
                   "train_episodes_per_second": round(steps_per_epoch * len(indices) * dist.world_size
                                                      / train_seconds),
                   "wall_seconds": round(time.perf_counter() - started, 1)}
        if "mc_error" in val:
            metrics["val_mc_error"] = val["mc_error"]
        if average is not None:
            metrics["val_error_live"] = live["error"]
        last_val_error = f"{100 * val['error']:.2f}%"
        selection = val.get("mc_error", val["error"])
        improved = selection < best_val  # the same on every rank: the counts were summed
        if improved:
            best_val, best_epoch = selection, epoch
        state = {"epoch": epoch, "best_val_error": best_val, "best_epoch": best_epoch,
                 "wall_seconds": metrics["wall_seconds"], **rng_states(device, order_generator, env_generator)}
        if dist.active:  # every rank's random streams, so that each goes on where it stopped
            state.update(world_size=dist.world_size, ranks=dist.gather(rng_states(device, order_generator,
                                                                                  env_generator)))
        extra = {"train_config": {"model_kwargs": config.model_kwargs(), **asdict(config)}, "metrics": metrics}

        if dist.main:  # last.pt first: it commits the epoch; best.pt and the metrics line follow from it
            averaged = {"average": average.state_dict()} if average is not None else {}
            run.save("last.pt", model, config.env_kwargs(),
                     {**extra, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                      "state": state, **averaged})
            if improved:
                run.save("best.pt", kept, config.env_kwargs(), extra)
            run.log(metrics)
            tqdm.write(f"epoch {epoch:3d}  loss {metrics['loss']:.4f}  train reward {metrics['reward']:.4f}  "
                       f"val error {100 * val['error']:.2f}%{' *' if improved else ''}  "
                       f"{metrics['epoch_seconds']:.1f}s ({metrics['train_episodes_per_second']} episodes/s)")
    env.close()
    val_env.close()

    def best_checkpoint() -> dict:
        if not (run_dir / "best.pt").is_file():
            raise SystemExit(f"{run_dir} has no best.pt: no epoch was trained (epochs={config.epochs})")
        return read_checkpoint(run_dir / "best.pt") if dist.active else {}

    best = dist.from_rank0(best_checkpoint)
    if dist.active:
        model.load_state_dict(best["model"])
        test = distributed_test(model, config, device, dist)
    else:
        test = evaluate_checkpoint(run_dir / "best.pt", "test", config.test_mc, str(device), config.eval_slots,
                                   config.seed, data_dir)
    results = {"preset": config.preset, "test": test, "best_val_error": best_val,
               "epochs": config.epochs, "wall_seconds": round(time.perf_counter() - started, 1),
               "device": str(device), "precision": str(autocast_dtype or "fp32"), "threads": torch.get_num_threads(),
               "world_size": dist.world_size, "command": " ".join(command)}

    def finish() -> dict:
        if config.figure:
            draw_figures(run_dir, data_dir)
        run.write_text("results.json", json.dumps(results, indent=2) + "\n")  # last: it marks the run finished
        print(f"{config.preset}: {format_result(test)}; best validation error {100 * best_val:.2f}%; "
              f"{results['wall_seconds'] / 60:.1f} min on {device}"
              f"{f' x {dist.world_size} processes' if dist.active else ''}; run folder {run_dir}")
        return results

    return dist.from_rank0(finish)


def run_recipe(args: argparse.Namespace, command: list[str], dist: Distributed) -> dict:
    """Train the stages of ``--recipe`` in turn (see RECIPES); a finished stage is skipped, a started one resumed."""
    explicit = explicit_flags(args, TrainConfig)
    root = Path(explicit.pop("run_dir", "") or f"runs/{args.recipe}-recipe")
    stages = RECIPES[args.recipe]
    results: dict = {}
    for number in range(1, len(stages) + 1):
        config, started = dist.from_rank0(partial(recipe_stage, args, explicit, root, number))
        print(f"--recipe {args.recipe}: stage {number} of {len(stages)} in {config.run_dir}")
        results = train(config, [*command, f"# stage {number} of {len(stages)}"], resume=started, dist=dist)
    return results


def recipe_stage(args: argparse.Namespace, explicit: dict, root: Path, number: int) -> tuple[TrainConfig, bool]:
    """The configuration of stage ``number`` of ``--recipe``, and whether it was started before (then its own
    config.json goes on, as with --resume)."""
    stage_dir = root / f"stage{number}"
    if (stage_dir / "config.json").is_file():
        return resolve_config(argparse.Namespace(**{**vars(args), "resume": str(stage_dir)})), True
    stage = RECIPES[args.recipe][number - 1]
    init = {"init_from": str(root / f"stage{number - 1}" / "best.pt")} if number > 1 else {}
    preset = stage.get("preset", args.recipe)
    values = {**PRESETS[preset], **stage, **explicit, **init, "preset": preset, "run_dir": str(stage_dir)}
    return TrainConfig(**values), False


def read_last_checkpoint(run_dir: Path, config: TrainConfig, device: torch.device, dist: Distributed) -> dict:
    """last.pt, checked against this run's configuration and number of processes (read onto the CPU for a
    broadcast when there are several)."""
    payload = read_checkpoint(run_dir / "last.pt", "cpu" if dist.active else device)
    saved_config = payload["extra"]["train_config"]
    saved_model = {**{k: v for k, v in ADDED_LATER.items() if k in config.model_kwargs()},
                   **saved_config["model_kwargs"]}
    if saved_model != config.model_kwargs() or payload["env_kwargs"] != config.env_kwargs():
        raise SystemExit(f"{run_dir / 'last.pt'} was trained with another configuration; refusing to resume")
    state = payload["extra"]["state"]
    saved_world = state.get("world_size", 1)  # absent: written by one process
    if saved_world != dist.world_size:
        how = "python train/ram_agent.py" if saved_world == 1 else \
            f"torchrun with --nproc_per_node (x --nnodes) = {saved_world}"
        raise SystemExit(f"--resume {run_dir}: the run was trained by {saved_world} process(es), this job has "
                         f"{dist.world_size}; each process's random streams are in last.pt, so continue it with the "
                         f"same number: {how} ... --resume {run_dir}")
    if config.epochs < state["epoch"]:
        raise SystemExit(f"--epochs {config.epochs}: {run_dir} has already trained {state['epoch']} epochs")
    return payload


def validate(model: RecurrentAttentionModel, val_env: Any, val_images: torch.Tensor, num_val: int,
             config: TrainConfig, seed: int, device: torch.device, autocast_dtype: torch.dtype | None,
             dist: Distributed) -> dict:
    """The validation error of ``model``, with the same first locations and noise at every call."""
    val_env.reset(seed=seed)
    with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
        generator = torch.Generator(device=device).manual_seed(seed)
        if dist.active:  # each rank its part; the counts of wrong answers add up to the split's
            return summed_errors(evaluate(model, val_env, None, config.val_mc, generator, indices=val_images,
                                          counts=True), dist)
        return evaluate(model, val_env, num_val, config.val_mc, generator)


def summed_errors(result: dict, dist: Distributed) -> dict:
    """Error rates over all ranks from each rank's counts (rates of unequal parts would not average)."""
    names = ["wrong", "num_images"] + (["mc_wrong"] if "mc_wrong" in result else [])
    totals = dist.sum(torch.tensor([result[name] for name in names], dtype=torch.float64)).long().tolist()
    counts = dict(zip(names, totals, strict=True))
    summed = {"error": counts["wrong"] / counts["num_images"], **counts}
    if "mc_wrong" in counts:
        summed["mc_error"] = counts["mc_wrong"] / counts["num_images"]
    return summed


def distributed_test(model: RecurrentAttentionModel, config: TrainConfig, device: torch.device,
                     dist: Distributed) -> dict:
    """The test errors of ``model`` (the best checkpoint's weights), the split shared among the ranks: what
    evaluate_checkpoint reports for one process (the deterministic error is the same; Monte-Carlo paths are drawn
    from each rank's own stream)."""
    started = time.perf_counter()
    images = dist.shard(torch.arange(SPLIT_SIZES["test"]))
    env = gym.make_vec("GlimpseMNIST-v0", num_envs=min(config.eval_slots, len(images)), device=device, split="test",
                       data_dir=config.data_dir or None, **config.env_kwargs())
    seed = rank_seed(config.seed, dist.rank)
    env.reset(seed=seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    result = summed_errors(evaluate(model, env, None, config.test_mc, generator, indices=images, counts=True), dist)
    env.close()
    result.update(split="test", mc_samples=config.test_mc, seed=config.seed, locations="policy",
                  seconds=round(time.perf_counter() - started, 2))
    return result


def initialise_from(model: RecurrentAttentionModel, config: TrainConfig, path: Path, device: torch.device) -> None:
    """Load a trained checkpoint's weights into ``model``: the same architecture and retina; how gradients flow, the
    location noise and a learned first glimpse (absent from a checkpoint trained without one) may differ, and so may
    the task, for a curriculum: translated -> cluttered, fewer distractors -> more, fewer glimpses -> more (the model
    does not depend on the canvas, the clutter or the number of glimpses; locations are relative to the canvas)."""
    payload = read_checkpoint(path, device)
    free = {"loc_std", "reinforce_core", "learn_first_location"}
    ours = {k: v for k, v in dataclasses.asdict(model.config).items() if k not in free}
    theirs = {k: v for k, v in payload["model_config"].items() if k not in free}
    if ours != theirs:
        diff = {k: (theirs.get(k), v) for k, v in ours.items() if theirs.get(k) != v}
        raise SystemExit(f"--init-from {path}: another architecture or retina ({diff}, checkpoint vs this run)")
    missing, unexpected = model.load_state_dict(payload["model"], strict=False)
    optional = {"first_location_logit", "first_baseline"}
    if unexpected or set(missing) - optional:
        raise SystemExit(f"--init-from {path}: weights do not fit (missing {missing}, unexpected {unexpected})")
    task = {k: (payload["env_kwargs"].get(k), v) for k, v in config.env_kwargs().items()
            if payload["env_kwargs"].get(k) != v}
    print(f"initialised from {path}" + (f" (new: {', '.join(missing)})" if missing else "")
          + (f" (trained on another task: {task}, checkpoint vs this run)" if task else ""))


def draw_figures(run_dir: Path, data_dir: str | None) -> None:
    """The learned glimpse paths on a few test digits (train/visualize.py, with the env's own retina geometry) and
    the learning curves (train/plot.py). A failure to draw costs only that figure, never the run's results."""
    def glimpse_paths() -> None:
        import visualize  # sibling scripts, imported here so that training needs no pygame or matplotlib until now

        argv = [str(run_dir / "best.pt"), "--out", str(run_dir), "--name", "glimpse_paths"]
        visualize.main(argv + (["--data-dir", data_dir] if data_dir else []))

    def learning_curves() -> None:
        import plot

        plot.plot_runs([run_dir], run_dir / "learning-curves.png")

    for name, draw in (("glimpse paths", glimpse_paths), ("learning curves", learning_curves)):
        try:
            draw()
        except Exception as error:
            print(f"warning: the {name} were not drawn ({type(error).__name__}: {error}); the run's results are "
                  f"kept", file=sys.stderr)


def main(argv: list[str] | None = None) -> dict | None:
    args = build_parser().parse_args(argv)
    dist = init_distributed(args.dist_timeout_minutes)
    try:
        # The other ranks print nothing but errors (stderr): progress and results come from rank 0.
        with nullcontext(sys.stdout) if dist.main else open(os.devnull, "w") as out, redirect_stdout(out):
            if args.list_presets:
                for name, values in PRESETS.items():
                    print(f"{name:18s} {values}")
                for name, stages in RECIPES.items():
                    print(f"--recipe {name}: " + " -> ".join(str(stage) for stage in stages))
                return None
            if args.recipe and (args.resume or hasattr(args, "init_from") or hasattr(args, "preset")):
                raise SystemExit("--recipe starts each stage from the one before and continues by itself: run the "
                                 "same --recipe command again instead of --resume; --init-from and --preset (the "
                                 "recipe names its own) do not apply")
            config = None if args.recipe else dist.from_rank0(lambda: resolve_config(args))
            launcher = ["python"] if not dist.active else \
                ["torchrun", f"--nnodes={dist.world_size // dist.local_world_size}",
                 f"--nproc_per_node={dist.local_world_size}"]
            command = [*launcher, *sys.argv] if argv is None else [*launcher, "train/ram_agent.py", *argv]
            if args.recipe:
                return run_recipe(args, command, dist)
            return train(config, command, resume=bool(args.resume), dist=dist)
    finally:
        dist.close()


if __name__ == "__main__":
    main()
