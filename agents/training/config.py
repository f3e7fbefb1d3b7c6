"""A run's configuration: the dataclasses whose fields are the trainer's flags, how flags, presets and a resumed
run's config.json combine into one, and the check of the whole of it before anything starts.

Every field of :class:`TrainConfig` is a ``--flag`` (``add_config_flags``). A refused value is a
:class:`ConfigError` whose message names the flag; the command line prints it as ``error: ...`` and exits with
status 2, as argparse does, before a run folder is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.ram import CORES, RAMConfig
from agents.training.precision import PRECISIONS, precision_here
from agents.training.presets import PRESETS
from glimpse_env.cli import finite_float, flag, flag_message
from glimpse_env.config import (
    ENV_ARGUMENTS,
    MAX_SEED,
    NUM_CLASSES,
    GlimpseConfig,
    _check_choice,
    _check_float,
    _check_int,
    env_arguments,
    resolve_device,
)
from glimpse_env.data import SPLIT_SIZES

LR_SCHEDULES = ("cosine", "constant")


class ConfigError(ValueError):
    """A configuration (or an input it names) the run cannot use; the message names the flag."""


def option(default: Any, help: str) -> Any:  # noqa: A002  (argparse's word)
    return field(default=default, metadata={"help": help})


def _env_field(name: str) -> tuple[str, str, Any]:
    """A TaskConfig field made from GlimpseConfig's: same type, default and help (their one home)."""
    env_field = GlimpseConfig.__dataclass_fields__[name]
    return name, env_field.type, option(env_field.default, env_field.metadata["help"])


def _env_kwargs(self: Any) -> dict:
    """The GlimpseMNIST-v0 arguments of the task (:data:`glimpse_env.config.ENV_ARGUMENTS`)."""
    return env_arguments(dataclasses.asdict(self))


# The paper configuration and the GlimpseMNIST-v0 arguments it sets (a flag overrides any of them): the preset, then
# one field per env argument of the task, made from GlimpseConfig's fields, so a new env argument is a flag here too.
TaskConfig = dataclasses.make_dataclass(
    "TaskConfig",
    [("preset", "str", option("mnist28-6g", "paper configuration to start from (see --list-presets)")),
     *(_env_field(name) for name in ENV_ARGUMENTS)],
    namespace={"env_kwargs": _env_kwargs,
               "__doc__": "The paper configuration and the GlimpseMNIST-v0 arguments it sets.",
               "__module__": __name__},
)


@dataclass
class TrainConfig(TaskConfig):
    """Every hyperparameter of a run; each one is also a command-line flag."""

    # the model (agents.RAMConfig)
    core: str = option("rnn", "recurrent core: rnn (the paper's ReLU RNN) or lstm")
    what_hidden: int = option(128, "units of the glimpse network's 'what' path")
    where_hidden: int = option(128, "units of the glimpse network's 'where' path")
    glimpse_out: int = option(256, "units of the glimpse network's output")
    core_size: int = option(256, "units of the recurrent core")
    loc_std: float = option(RAMConfig.loc_std, "standard deviation of the Gaussian location policy, on [-1, 1]")
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
    test_subset: int = option(0, "test on only the first N test images (0: all 10,000); for quick checks: the "
                                 "figure is then not the test split's, and results.json says so (test_images)")
    # the run
    seed: int = option(0, "seed of everything random in the run")
    device: str = option("auto", "auto (CUDA when present), cpu or cuda")
    precision: str = option("auto", "bf16 (autocast), fp32, or auto: bf16 on CUDA and on CPUs with bf16 "
                                    "instructions (AMX or AVX-512 BF16); every preset pins bf16, which becomes "
                                    "fp32 where bf16 would only be emulated unless this flag says bf16")
    run_dir: str = option("", "run folder (default: runs/<preset>-<time>)")
    data_dir: str = option("", "MNIST folder (default: $GLIMPSE_MNIST_DIR, else a download)")
    figure: bool = option(True, "draw the learned glimpse paths (PNG and GIF) into the run folder at the end")
    cuda_graph: str = option("on", "on CUDA, capture the whole training step once in a CUDA graph and replay it "
                                   "(on; eager if the capture fails, saying why) or run it eagerly (off); the CPU "
                                   "always runs eagerly")

    def model_kwargs(self) -> dict:
        """The model's flags: RAMConfig's fields that are flags here (its retina comes from the env's)."""
        return {name: getattr(self, name) for name in MODEL_FLAGS}

    def model_config(self) -> RAMConfig:
        """The model a run of this configuration trains (the env's retina sets its input sizes); RAMConfig checks
        the model's values (``loc_std`` included), once."""
        return RAMConfig(scales=self.scales, glimpse_size=self.glimpse_size, num_classes=NUM_CLASSES,
                         **self.model_kwargs())


MODEL_FLAGS = tuple(f.name for f in dataclasses.fields(RAMConfig)
                    if f.name in TrainConfig.__dataclass_fields__ and f.name not in ENV_ARGUMENTS)


# The env's choices (first_location) are GlimpseConfig's; then the trainer's own.
ENV_CHOICES = {name: list(GlimpseConfig.__dataclass_fields__[name].metadata["choices"]) for name in ENV_ARGUMENTS
               if GlimpseConfig.__dataclass_fields__[name].metadata["choices"]}
CHOICES = {"preset": list(PRESETS), "core": list(CORES), "lr_schedule": list(LR_SCHEDULES),
           "precision": list(PRECISIONS), "cuda_graph": ["on", "off"], **ENV_CHOICES}
# Fields a run folder written before they existed lacks, with the behaviour it was trained with.
ADDED_LATER = {"learn_first_location": False, "reinforce_core": False, "shared_canvas": False, "init_from": "",
               "val_subset": 0, "max_nonfinite_steps": 20, "clip_separately": False, "loc_std_final": 0.0,
               "ema_decay": 0.0, "test_subset": 0, "cuda_graph": "on"}
# What may change when a run is resumed; everything else must match the run's config.json.
RESUMABLE_CHANGES = {"epochs", "device", "run_dir", "data_dir", "figure", "eval_slots", "max_nonfinite_steps",
                     "cuda_graph"}
# The trainer's integer flags: (smallest, largest or None, how the range is said). The env's and the model's are
# checked by GlimpseConfig and RAMConfig, their homes.
INT_BOUNDS = {
    "epochs": (1, None, ">= 1"), "batch_size": (1, None, ">= 1"), "mc_samples": (1, None, ">= 1"),
    "train_subset": (0, SPLIT_SIZES["train"], f"in [0, {SPLIT_SIZES['train']}] (the training split; 0: all)"),
    "eval_slots": (1, None, ">= 1"),
    "val_subset": (0, SPLIT_SIZES["validation"],
                   f"in [0, {SPLIT_SIZES['validation']}] (the validation split; 0: all)"),
    "test_subset": (0, SPLIT_SIZES["test"], f"in [0, {SPLIT_SIZES['test']}] (the test split; 0: all)"),
    "val_mc": (0, None, ">= 0"), "test_mc": (0, None, ">= 0"), "max_nonfinite_steps": (1, None, ">= 1"),
    "seed": (0, MAX_SEED, "in [0, 2**64 - 1]"),
}
# The trainer's float flags: (smallest, whether it is allowed itself, largest (excluded) or None); all finite.
FLOAT_BOUNDS = {"loc_std_final": (0.0, True, None), "lr": (0.0, False, None), "lr_final": (0.0, True, None),
                "warmup_epochs": (0.0, True, None), "weight_decay": (0.0, True, None), "rl_weight": (0.0, True, None),
                "grad_clip": (0.0, True, None), "ema_decay": (0.0, True, 1.0)}


def add_config_flags(parser: argparse.ArgumentParser, config_class: type, choices: dict[str, list]) -> None:
    """One ``--flag`` per field of a config dataclass, absent unless given (so presets can fill the gaps)."""
    for f in dataclasses.fields(config_class):
        help_text = f"{f.metadata['help']} (default: {f.default})"
        if f.type == "bool":
            parser.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                                help=help_text)
        else:
            kind = {"int": int, "float": finite_float, "str": str}[f.type]
            parser.add_argument(flag(f.name), type=kind, default=argparse.SUPPRESS, choices=choices.get(f.name),
                                help=help_text)


def explicit_flags(args: argparse.Namespace, config_class: type) -> dict:
    """The config fields given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class) if hasattr(args, f.name)}


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the preset, then explicit flags (:func:`new_run_config`); with --resume, the run's config with
    allowed changes."""
    explicit = explicit_flags(args, TrainConfig)
    if not args.resume:
        preset = explicit.get("preset", TrainConfig.preset)
        return new_run_config({**PRESETS[preset], **explicit, "preset": preset}, explicit)
    saved = {**ADDED_LATER, **read_run_config(Path(args.resume))}
    changed = {k: (saved.get(k), v) for k, v in explicit.items() if saved.get(k) != v}
    refused = {k: pair for k, pair in changed.items() if k not in RESUMABLE_CHANGES}
    if refused:
        lines = ", ".join(f"{k}: run has {old!r}, asked {new!r}" for k, (old, new) in refused.items())
        raise ConfigError(flag_message("--resume", f"{args.resume}: refusing to continue with another "
                                       f"configuration ({lines}). Only {sorted(RESUMABLE_CHANGES)} may change."))
    return TrainConfig(**{**saved, **explicit, "run_dir": str(args.resume)})


def new_run_config(values: dict, explicit: dict) -> TrainConfig:
    """A new run of ``values`` (a preset's or a recipe stage's, with the flags given, ``explicit``) on this machine:
    the preset's bf16 is fp32 where it would be emulated (:func:`~agents.training.precision.precision_here`)."""
    return TrainConfig(**{**values, "precision": precision_here(values, explicit)})


def read_run_config(folder: Path) -> dict:
    """A run folder's config.json, checked to be one this version can continue."""
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(flag_message("--resume", f"{folder}: no config.json there; is it a run folder?"))
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(flag_message("--resume", f"{folder}: its config.json cannot be read ({error})")) from error
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    if not isinstance(saved, dict) or set(saved) - known:
        unknown = sorted(set(saved) - known) if isinstance(saved, dict) else type(saved).__name__
        raise ConfigError(flag_message("--resume", f"{folder}: its config.json is not a run configuration of "
                                       f"this version (unknown: {unknown})"))
    return saved


def check_config(config: TrainConfig, world_size: int = 1) -> None:
    """A ConfigError naming the flag (``argument --flag: ...``), before anything starts, for any value the run
    could not use. Each value is checked here once: the env's by GlimpseConfig, the model's by RAMConfig, the
    trainer's by the tables above."""
    try:
        for name, value in dataclasses.asdict(config).items():
            expected = TrainConfig.__dataclass_fields__[name].type
            kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}[expected]
            if not isinstance(value, kinds) or (expected != "bool" and isinstance(value, bool)):
                raise ValueError(f"{name} must be {expected}, got {value!r}")
        for name, (low, high, allowed) in INT_BOUNDS.items():
            _check_int(name, getattr(config, name), low, allowed, high)
        for name, (low, inclusive, high) in FLOAT_BOUNDS.items():
            _check_float(name, getattr(config, name), low, inclusive, high)
        for name, allowed in CHOICES.items():
            if name != "preset" and name not in ENV_ARGUMENTS:
                _check_choice(name, getattr(config, name), tuple(allowed))
        GlimpseConfig(**config.env_kwargs())
        config.model_config()
    except ValueError as error:
        raise ConfigError(naming_the_flag(str(error))) from error
    if config.warmup_epochs > config.epochs:
        raise ConfigError(flag_message("--warmup-epochs", f"must be <= --epochs ({config.epochs}): a warm-up "
                                       f"longer than the run never reaches --lr, got {config.warmup_epochs:g}"))
    if config.batch_size % world_size:
        raise ConfigError(flag_message("--batch-size", f"{config.batch_size} does not split evenly over the "
                                       f"{world_size} processes of this torchrun job: choose a multiple of "
                                       f"{world_size} (it is the global batch, so the hyperparameters mean the same "
                                       f"at any number of processes)"))
    if config.val_subset and config.val_subset < world_size:
        raise ConfigError(flag_message("--val-subset", f"{config.val_subset}: fewer validation images than the "
                                       f"{world_size} processes"))
    if config.test_subset and config.test_subset < world_size:
        raise ConfigError(flag_message("--test-subset", f"{config.test_subset}: fewer test images than the "
                                       f"{world_size} processes"))
    try:
        resolve_device(config.device)
    except ValueError as error:
        raise ConfigError(flag_message("--device", f"{config.device}: {error}")) from error


def naming_the_flag(message: str, config_class: type | None = None) -> str:
    """A check's message about a field of ``config_class`` (default TrainConfig; ``size must be ...``) in the one
    form of a refused flag's: ``argument --size: must be ...``."""
    match = re.match(r"(\w+)", message)
    if match and match.group(1) in (config_class or TrainConfig).__dataclass_fields__:
        name = match.group(1)
        rest = message[len(name):]
        return flag_message(flag(name), rest[1:] if rest.startswith(" ") else rest)
    return message
