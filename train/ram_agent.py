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
last.pt (written atomically each epoch), results.json and a figure of the learned glimpse paths.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
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
from evaluate import evaluate_checkpoint, format_result  # noqa: E402


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
    # evaluation
    val_mc: int = option(0, "K for Monte-Carlo validation error (0: deterministic policy only)")
    test_mc: int = option(10, "K for the final Monte-Carlo test error")
    eval_slots: int = option(5000, "episodes played at once during evaluation")
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
ADDED_LATER = {"learn_first_location": False, "reinforce_core": False, "shared_canvas": False, "init_from": ""}
# What may change when a run is resumed; everything else must match the run's config.json.
RESUMABLE_CHANGES = {"epochs", "device", "run_dir", "data_dir", "figure", "eval_slots"}


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


class Run:
    """A training run's folder: config, metrics, checkpoints."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.dir = Path(config.run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.writer = None
        try:  # TensorBoard too, when it is installed
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.dir / "tensorboard"))
        except Exception:
            pass

    def save_config(self, command: list[str]) -> None:
        (self.dir / "config.json").write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        (self.dir / "command.txt").write_text(" ".join(command) + "\n")

    def log(self, metrics: dict) -> None:
        with self.metrics_path.open("a") as out:
            out.write(json.dumps(metrics) + "\n")
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(key, value, metrics["epoch"])
            self.writer.flush()


def train(config: TrainConfig, command: list[str]) -> dict:
    device = resolve_device(config.device)
    autocast_dtype = pick_precision(config.precision, device)
    if config.lr_schedule not in ("cosine", "constant"):
        raise SystemExit(f"--lr-schedule must be cosine or constant; got {config.lr_schedule!r}")
    if not config.run_dir:
        config.run_dir = f"runs/{config.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = Run(config)
    resuming = (run.dir / "last.pt").is_file()
    if not resuming:
        run.save_config(command)
    torch.manual_seed(config.seed)
    data_dir = config.data_dir or None
    slots = config.batch_size * config.mc_samples
    env = gym.make_vec("GlimpseMNIST-v0", num_envs=slots, device=device, split="train", data_dir=data_dir,
                       **config.env_kwargs())
    val_env = gym.make_vec("GlimpseMNIST-v0", num_envs=config.eval_slots, device=device, split="validation",
                           data_dir=data_dir, **config.env_kwargs())
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
    start_epoch, best_val, wall_before = 1, float("inf"), 0.0
    if config.init_from and not resuming:
        initialise_from(model, config, Path(config.init_from), device)

    if resuming:
        payload = read_checkpoint(run.dir / "last.pt", device)
        saved_config = payload["extra"]["train_config"]
        saved_model = {**{k: v for k, v in ADDED_LATER.items() if k in config.model_kwargs()},
                       **saved_config["model_kwargs"]}
        if saved_model != config.model_kwargs() or payload["env_kwargs"] != config.env_kwargs():
            raise SystemExit(f"{run.dir / 'last.pt'} was trained with another configuration; refusing to resume")
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["extra"]["optimizer"])
        scheduler.load_state_dict(payload["extra"]["scheduler"])
        state = payload["extra"]["state"]
        start_epoch, best_val, wall_before = state["epoch"] + 1, state["best_val_error"], state["wall_seconds"]
        torch.set_rng_state(state["torch_rng"].cpu())
        order_generator.set_state(state["order_rng"].cpu())
        env.unwrapped._generator.set_state(state["env_rng"].to(env.unwrapped._generator.device))
        print(f"resuming {run.dir} at epoch {start_epoch} (best validation error {100 * best_val:.2f}%)")

    started = time.perf_counter() - wall_before
    last_val_error = "-" if start_epoch == 1 else f"{100 * best_val:.2f}% (best)"
    for epoch in range(start_epoch, config.epochs + 1):
        model.train()
        epoch_start = time.perf_counter()
        order = torch.randperm(num_train, generator=order_generator)
        order = torch.cat([order, order[: steps_per_epoch * config.batch_size - num_train]])  # pad the last batch
        totals = torch.zeros(5, device=device)  # loss, its three terms, reward: summed on the device
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
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            parts = (loss.total, loss.cross_entropy, loss.baseline, loss.reinforce, episodes.reward.mean())
            totals += torch.stack([part.detach().float() for part in parts])
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.total.item():.3f}", reward=f"{episodes.reward.mean().item():.3f}",
                                val_error=last_val_error)
        train_seconds = time.perf_counter() - epoch_start

        val_env.reset(seed=config.seed)  # the same first locations at every validation
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            val = evaluate(model, val_env, len(val_env.unwrapped.digits), config.val_mc,
                           torch.Generator(device=device).manual_seed(config.seed))
        means = (totals / steps_per_epoch).tolist()
        metrics = {"epoch": epoch, **dict(zip(("loss", "cross_entropy", "baseline", "reinforce", "reward"), means,
                                              strict=True)),
                   "val_error": val["error"], "lr": scheduler.get_last_lr()[0],
                   "epoch_seconds": round(time.perf_counter() - epoch_start, 2),
                   "train_episodes_per_second": round(steps_per_epoch * len(indices) / train_seconds),
                   "wall_seconds": round(time.perf_counter() - started, 1)}
        if "mc_error" in val:
            metrics["val_mc_error"] = val["mc_error"]
        run.log(metrics)
        last_val_error = f"{100 * val['error']:.2f}%"
        selection = val.get("mc_error", val["error"])
        improved = selection < best_val
        best_val = min(best_val, selection)
        state = {"epoch": epoch, "best_val_error": best_val, "wall_seconds": metrics["wall_seconds"],
                 "torch_rng": torch.get_rng_state(), "order_rng": order_generator.get_state(),
                 "env_rng": env.unwrapped._generator.get_state()}
        extra = {"train_config": {"model_kwargs": config.model_kwargs(), **asdict(config)}, "metrics": metrics}
        if improved:
            save_agent(run.dir / "best.pt", model, config.env_kwargs(), extra)
        save_agent(run.dir / "last.pt", model, config.env_kwargs(),
                   {**extra, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "state": state})
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
    (run.dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if config.figure:
        draw_figure(run.dir, data_dir)
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
    return train(config, command)


if __name__ == "__main__":
    main()
