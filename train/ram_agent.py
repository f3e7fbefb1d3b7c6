"""Train the Recurrent Attention Model (Mnih et al. 2014) on GlimpseMNIST-v0, then report its test error.

    python train/ram_agent.py                              # 28x28 MNIST, 6 glimpses of 8x8 (the default preset)
    python train/ram_agent.py --preset translated60-4g     # 60x60 translated MNIST, 4 glimpses, 12x12 x 3 scales
    python train/ram_agent.py --resume runs/mnist28-6g-... # continue a run that was stopped

The agent learns through the env's batched vector env (the env is the data pipeline): every training image is
shown in M slots, so the baseline and the advantage see M sampled location paths of it; an epoch visits every
training image once. The hybrid loss: cross-entropy on the final class scores + MSE of the baseline against the
reward + rl_weight * REINFORCE. Model selection uses the validation split (the last 5,000 training digits); the
test split is touched once, at the end, by the best checkpoint.

A run folder holds config.json (the resolved configuration), metrics.jsonl (one line per epoch), best.pt and
last.pt (written atomically each epoch), results.json and a figure of the learned glimpse paths. last.pt is an
epoch's commit point: it is written first and holds what the epoch's other outputs need, and --resume makes
metrics.jsonl and best.pt agree with it, so a kill at any moment loses or repeats nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gymnasium as gym
import torch
from tqdm import tqdm

import glimpse_env  # noqa: F401  (registers GlimpseMNIST-v0)
from agents import RAMConfig, RecurrentAttentionModel, evaluate, hybrid_loss, run_episodes, save_agent
from agents.checkpoint import read_checkpoint
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
    learn_first_location: bool = option(True, "the agent learns where its first glimpse goes (--no-learn-first-"
                                              "location: the env puts it at --first-location)")
    reinforce_core: bool = option(False, "REINFORCE trains the core and glimpse network too, not only the location "
                                         "head (the paper's full-network gradient)")
    # learning
    epochs: int = option(45, "passes over the 55,000 training images")
    batch_size: int = option(128, "images per gradient step (each shown in mc_samples slots)")
    train_subset: int = option(0, "train on only the first N training images (0: all 55,000); for quick checks")
    mc_samples: int = option(10, "M: sampled location paths per training image")
    shared_canvas: bool = option(True, "the M paths of an image look at one canvas (the paper's M samples of one "
                                       "episode); --no-shared-canvas: each path gets its own translation and clutter")
    init_from: str = option("", "start from the weights of this checkpoint (same architecture and task), not from "
                                "a random initialisation")
    lr: float = option(2e-3, "peak learning rate of Adam")
    lr_schedule: str = option("cosine", "cosine (warm-up, then cosine decay to lr_final) or constant")
    lr_final: float = option(1e-5, "learning rate at the end of the cosine schedule")
    warmup_epochs: float = option(0.5, "epochs of linear learning-rate warm-up")
    weight_decay: float = option(0.0, "Adam(W) weight decay")
    rl_weight: float = option(1.0, "weight of the REINFORCE term in the hybrid loss")
    grad_clip: float = option(5.0, "clip the gradient's global norm to this (0: no clipping)")
    max_nonfinite_steps: int = option(20, "a step whose loss or gradient is NaN/inf is skipped (and counted in the "
                                          "metrics); this many in a row stop the run")
    # evaluation
    val_mc: int = option(0, "K for Monte-Carlo validation error (0: deterministic policy only)")
    test_mc: int = option(10, "K for the final Monte-Carlo test error")
    eval_slots: int = option(5000, "episodes played at once during evaluation")
    val_subset: int = option(0, "validate on only the first N validation images (0: all 5,000); for quick checks")
    # the run
    seed: int = option(0, "seed of everything random in the run")
    device: str = option("auto", "auto (CUDA when present), cpu or cuda")
    precision: str = option("auto", "bf16 (autocast), fp32, or auto: bf16 on CUDA and on CPUs with AMX")
    run_dir: str = option("", "run folder (default: runs/<preset>-<time>)")
    data_dir: str = option("", "MNIST folder (default: $GLIMPSE_MNIST_DIR, else a download)")
    figure: bool = option(True, "draw the learned glimpse paths (PNG and GIF) into the run folder at the end")

    def model_kwargs(self) -> dict:
        return dict(core=self.core, what_hidden=self.what_hidden, where_hidden=self.where_hidden,
                    glimpse_out=self.glimpse_out, core_size=self.core_size, loc_std=self.loc_std,
                    learn_first_location=self.learn_first_location, reinforce_core=self.reinforce_core)


# The rows of the paper's table (Mnih et al. 2014, tables 1 and 2). Keys are TrainConfig fields.
MNIST28 = dict(size=28, scales=1, glimpse_size=8, clutter=0)
TRANSLATED60 = dict(size=60, scales=3, glimpse_size=12, clutter=0)
PRESETS: dict[str, dict] = {
    "mnist28-2g": dict(MNIST28, n_glimpses=2),
    "mnist28-4g": dict(MNIST28, n_glimpses=4),
    "mnist28-6g": dict(MNIST28, n_glimpses=6),
    "mnist28-7g": dict(MNIST28, n_glimpses=7),
    "translated60-4g": dict(TRANSLATED60, n_glimpses=4),
    "translated60-6g": dict(TRANSLATED60, n_glimpses=6),
    "translated60-8g": dict(TRANSLATED60, n_glimpses=8),
    "cluttered60-8g": dict(TRANSLATED60, n_glimpses=8, clutter=4),
    "cluttered100-8g": dict(size=100, scales=4, glimpse_size=12, n_glimpses=8, clutter=8),
}
# Fields a run folder written before they existed lacks, with the behaviour it was trained with.
ADDED_LATER = {"learn_first_location": False, "reinforce_core": False, "shared_canvas": False, "init_from": "",
               "val_subset": 0, "max_nonfinite_steps": 20}
# What may change when a run is resumed; everything else must match the run's config.json.
RESUMABLE_CHANGES = {"epochs", "device", "run_dir", "data_dir", "figure", "eval_slots", "max_nonfinite_steps"}
# Flags that must be at least this, checked before anything starts (a 0 would fail deep inside, naming no flag).
MINIMUMS = {"epochs": 1, "batch_size": 1, "mc_samples": 1, "train_subset": 0, "eval_slots": 1, "val_subset": 0,
            "val_mc": 0, "test_mc": 0, "max_nonfinite_steps": 1}


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
    parser.add_argument("--list-presets", action="store_true", help="print the presets and exit")
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
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    try:  # bf16 matmuls are fast on CPUs with AMX tiles, slow elsewhere
        has_amx = "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        has_amx = False
    return torch.bfloat16 if has_amx else None


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


def train(config: TrainConfig, command: list[str], resume: bool = False) -> dict:
    check_flags(config)
    device = resolve_device(config.device)
    autocast_dtype = pick_precision(config.precision, device)
    if not config.run_dir:
        config.run_dir = f"runs/{config.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = Run(config, command, resume)
    resuming = (run.dir / "last.pt").is_file()
    if resume and (run.dir / "results.json").is_file():
        finished = json.loads((run.dir / "results.json").read_text())
        if finished.get("epochs") == config.epochs:
            print(f"{run.dir} is finished ({config.epochs} epochs, results.json): nothing to do (a larger --epochs "
                  f"trains on)")
            return finished
        if not resuming:
            raise SystemExit(f"{run.dir} is finished and has no last.pt to continue from")
    torch.manual_seed(config.seed)
    data_dir = config.data_dir or None
    slots = config.batch_size * config.mc_samples
    env = gym.make_vec("GlimpseMNIST-v0", num_envs=slots, device=device, split="train", data_dir=data_dir,
                       **config.env_kwargs())
    num_val = min(config.val_subset or SPLIT_SIZES["validation"], SPLIT_SIZES["validation"])
    val_env = gym.make_vec("GlimpseMNIST-v0", num_envs=min(config.eval_slots, num_val), device=device,
                           split="validation", data_dir=data_dir, **config.env_kwargs())
    env.reset(seed=config.seed)
    num_train = len(env.unwrapped.digits)
    if config.train_subset:
        num_train = min(num_train, config.train_subset)
    model_config = RAMConfig.from_spaces(env.single_observation_space, env.single_action_space,
                                         **config.model_kwargs())
    model = RecurrentAttentionModel(model_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(num_train / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(config, step, steps_per_epoch))
    order_generator = torch.Generator().manual_seed(config.seed)
    env_generator = env.unwrapped._generator
    start_epoch, best_val, best_epoch, wall_before = 1, float("inf"), 0, 0.0
    if config.init_from and not resuming:
        initialise_from(model, config, Path(config.init_from), device)

    payload = None
    if resuming:
        payload = read_checkpoint(run.dir / "last.pt", device)
        saved_config = payload["extra"]["train_config"]
        saved_model = {**{k: v for k, v in ADDED_LATER.items() if k in config.model_kwargs()},
                       **saved_config["model_kwargs"]}
        if saved_model != config.model_kwargs() or payload["env_kwargs"] != config.env_kwargs():
            raise SystemExit(f"{run.dir / 'last.pt'} was trained with another configuration; refusing to resume")
        state = payload["extra"]["state"]
        if config.epochs < state["epoch"]:
            raise SystemExit(f"--epochs {config.epochs}: {run.dir} has already trained {state['epoch']} epochs")
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["extra"]["optimizer"])
        scheduler.load_state_dict(payload["extra"]["scheduler"])
        start_epoch, best_val, wall_before = state["epoch"] + 1, state["best_val_error"], state["wall_seconds"]
        best_epoch = state.get("best_epoch", 0)  # 0: written before last.pt recorded it
        print(f"resuming {run.dir} at epoch {start_epoch} (best validation error {100 * best_val:.2f}%)")
    if resume:
        run.settle(payload, model)
        saved = json.loads((run.dir / "config.json").read_text())
        if saved["epochs"] != config.epochs:  # the one change a resume writes down
            run.write_text("config.json", json.dumps({**saved, "epochs": config.epochs}, indent=2) + "\n")
            print(f"config.json: epochs {saved['epochs']} -> {config.epochs}")
    if payload is not None:  # last: reading a checkpoint builds a model, which draws from torch's generator
        restore_rng_states(payload["extra"]["state"], device, order_generator, env_generator)

    started = time.perf_counter() - wall_before
    last_val_error = "-" if start_epoch == 1 else f"{100 * best_val:.2f}% (best)"
    bad_in_a_row = 0
    for epoch in range(start_epoch, config.epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        order = torch.randperm(num_train, generator=order_generator)
        order = torch.cat([order, order[: steps_per_epoch * config.batch_size - num_train]])  # pad the last batch
        totals = torch.zeros(5, device=device)  # loss, its three terms, reward: summed on the device
        nonfinite = 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{config.epochs}", leave=False, mininterval=1.0,
                   disable=None)
        for step in bar:
            images = order[step * config.batch_size:(step + 1) * config.batch_size].to(device)
            indices = images.repeat_interleave(config.mc_samples)
            options = {"indices": indices, "slots_per_canvas": config.mc_samples if config.shared_canvas else 1}
            with torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                enabled=autocast_dtype is not None):
                episodes = run_episodes(model, env, options)
                loss = hybrid_loss(episodes, config.rl_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            # inf: measure the norm without clipping (a NaN or inf in it is checked below)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or math.inf)
            if bool(torch.isfinite(loss.total) & torch.isfinite(grad_norm)):
                optimizer.step()
                parts = (loss.total, loss.cross_entropy, loss.baseline, loss.reinforce, episodes.reward.mean())
                totals += torch.stack([part.detach().float() for part in parts])
                bad_in_a_row = 0
            else:  # a NaN or inf must never reach the weights (nor Adam's moments): skip the step
                nonfinite += 1
                bad_in_a_row += 1
                if bad_in_a_row >= config.max_nonfinite_steps:
                    kept = f"{run.dir / 'last.pt'} (epoch {epoch - 1}) is intact" if epoch > 1 else "nothing was saved"
                    raise SystemExit(f"epoch {epoch}, step {step + 1}/{steps_per_epoch}: {bad_in_a_row} steps in a "
                                     f"row had a NaN or inf loss or gradient; stopping ({kept}). Try a lower --lr or "
                                     f"--grad-clip")
            scheduler.step()  # the schedule follows the step count, taken or skipped
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.total.item():.3f}", reward=f"{episodes.reward.mean().item():.3f}",
                                val_error=last_val_error)
        train_seconds = time.perf_counter() - epoch_start

        val_env.reset(seed=config.seed)  # the same first locations at every validation
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            val = evaluate(model, val_env, num_val, config.val_mc,
                           torch.Generator(device=device).manual_seed(config.seed))
        means = (totals / (steps_per_epoch - nonfinite)).tolist()  # over the steps taken (NaN if none: null)
        metrics = {"epoch": epoch, **dict(zip(("loss", "cross_entropy", "baseline", "reinforce", "reward"), means,
                                              strict=True)),
                   "nonfinite_steps": nonfinite, "val_error": val["error"], "lr": scheduler.get_last_lr()[0],
                   "epoch_seconds": round(time.perf_counter() - epoch_start, 2),
                   "train_episodes_per_second": round(steps_per_epoch * len(indices) / train_seconds),
                   "wall_seconds": round(time.perf_counter() - started, 1)}
        if "mc_error" in val:
            metrics["val_mc_error"] = val["mc_error"]
        last_val_error = f"{100 * val['error']:.2f}%"
        selection = val.get("mc_error", val["error"])
        improved = selection < best_val
        if improved:
            best_val, best_epoch = selection, epoch
        state = {"epoch": epoch, "best_val_error": best_val, "best_epoch": best_epoch,
                 "wall_seconds": metrics["wall_seconds"], **rng_states(device, order_generator, env_generator)}
        extra = {"train_config": {"model_kwargs": config.model_kwargs(), **asdict(config)}, "metrics": metrics}
        # last.pt first: it commits the epoch; best.pt and the metrics line follow from it (see Run.settle).
        run.save("last.pt", model, config.env_kwargs(),
                 {**extra, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "state": state})
        if improved:
            run.save("best.pt", model, config.env_kwargs(), extra)
        run.log(metrics)
        tqdm.write(f"epoch {epoch:3d}  loss {metrics['loss']:.4f}  train reward {metrics['reward']:.4f}  "
                   f"val error {100 * val['error']:.2f}%{' *' if improved else ''}  "
                   f"{metrics['epoch_seconds']:.1f}s ({metrics['train_episodes_per_second']} episodes/s)")
    env.close()
    val_env.close()

    if not (run.dir / "best.pt").is_file():
        raise SystemExit(f"{run.dir} has no best.pt: no epoch was trained (epochs={config.epochs})")
    test = evaluate_checkpoint(run.dir / "best.pt", "test", config.test_mc, str(device), config.eval_slots,
                               config.seed, data_dir)
    results = {"preset": config.preset, "test": test, "best_val_error": best_val,
               "epochs": config.epochs, "wall_seconds": round(time.perf_counter() - started, 1),
               "device": str(device), "precision": str(autocast_dtype or "fp32"), "threads": torch.get_num_threads(),
               "command": " ".join(command)}
    if config.figure:
        draw_figure(run.dir, data_dir)
    run.write_text("results.json", json.dumps(results, indent=2) + "\n")  # last: it marks the run finished
    print(f"{config.preset}: {format_result(test)}; best validation error {100 * best_val:.2f}%; "
          f"{results['wall_seconds'] / 60:.1f} min on {device}; run folder {run.dir}")
    return results


def initialise_from(model: RecurrentAttentionModel, config: TrainConfig, path: Path, device: torch.device) -> None:
    """Load a trained checkpoint's weights into ``model``: same task and architecture; how gradients flow, the
    location noise and a learned first glimpse (absent from a checkpoint trained without one) may differ."""
    payload = read_checkpoint(path, device)
    def task(env_kwargs: dict) -> dict:  # where the first glimpse goes may differ too
        return {k: v for k, v in env_kwargs.items() if k != "first_location"}

    if task(payload["env_kwargs"]) != task(config.env_kwargs()):
        raise SystemExit(f"--init-from {path}: trained on {payload['env_kwargs']}, this run is {config.env_kwargs()}")
    free = {"loc_std", "reinforce_core", "learn_first_location"}
    ours = {k: v for k, v in dataclasses.asdict(model.config).items() if k not in free}
    theirs = {k: v for k, v in payload["model_config"].items() if k not in free}
    if ours != theirs:
        diff = {k: (theirs.get(k), v) for k, v in ours.items() if theirs.get(k) != v}
        raise SystemExit(f"--init-from {path}: another architecture ({diff}, checkpoint vs this run)")
    missing, unexpected = model.load_state_dict(payload["model"], strict=False)
    optional = {"first_location_logit", "first_baseline"}
    if unexpected or set(missing) - optional:
        raise SystemExit(f"--init-from {path}: weights do not fit (missing {missing}, unexpected {unexpected})")
    print(f"initialised from {path}" + (f" (new: {', '.join(missing)})" if missing else ""))


def draw_figure(run_dir: Path, data_dir: str | None) -> None:
    """The learned glimpse paths on a few test digits, drawn with the env's own retina geometry."""
    import visualize  # a sibling script; imported here so that training needs no pygame until the end

    argv = [str(run_dir / "best.pt"), "--out", str(run_dir), "--name", "glimpse_paths"]
    visualize.main(argv + (["--data-dir", data_dir] if data_dir else []))


def main(argv: list[str] | None = None) -> dict | None:
    args = build_parser().parse_args(argv)
    if args.list_presets:
        for name, values in PRESETS.items():
            print(f"{name:18s} {values}")
        return None
    config = resolve_config(args)
    command = ["python", *sys.argv] if argv is None else ["python", "train/ram_agent.py", *argv]
    return train(config, command, resume=bool(args.resume))


if __name__ == "__main__":
    main()
