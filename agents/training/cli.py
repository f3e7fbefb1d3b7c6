"""The command lines of the trainer (``train/ram_agent.py``) and of the evaluation (``train/evaluate.py``): their
parsers and ``main`` functions, so that the scripts stay a docstring and a call, and tests run them in-process.

A bad command line, or an input it names that cannot be used, prints ``error: ...`` naming the flag and exits with
status 2 (argparse's ``parser.error``), before anything is written; a traceback is a bug.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext, redirect_stdout
from functools import partial
from pathlib import Path
from typing import NoReturn

import torch

from agents import load_agent
from agents.training.config import (
    CHOICES,
    ConfigError,
    TrainConfig,
    add_config_flags,
    check_config,
    explicit_flags,
    new_run_config,
    resolve_config,
)
from agents.training.distributed import Distributed, init_distributed
from agents.training.evaluation import evaluate_checkpoint, format_result
from agents.training.presets import PRESETS, RECIPES, stage_values
from agents.training.seeds import SeedGroup
from agents.training.trainer import Figures, train
from glimpse_env.cli import SEED, fail, flag_message, int_in, load_split, positive_float
from glimpse_env.config import _check_int, resolve_device
from glimpse_env.data import SPLIT_SIZES


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last.pt")
    parser.add_argument("--list-presets", action="store_true", help="print the presets and recipes and exit")
    parser.add_argument("--recipe", choices=list(RECIPES), help="train a row's whole recipe, stage after stage, in "
                        "RUN_DIR/stage1, stage2, ... (RUN_DIR: --run-dir, default runs/<recipe>-recipe); the same "
                        "command again continues it where it stopped")
    parser.add_argument("--dist-timeout-minutes", type=positive_float, default=30.0,
                        help="under torchrun: a collective that some rank does not join within this fails, and the "
                             "job stops with an error, rather than hanging on a dead rank (default: 30)")
    parser.add_argument("--threads", type=int_in(1), default=None,
                        help="torch intra-op threads of each process (default: torch's; under torchrun the "
                             "machine's cores shared among its processes, unless OMP_NUM_THREADS was set)")
    parser.add_argument("--seeds", type=seed_list, metavar="N,N,...",
                        help="train one run per seed at once, in one process with one batched step for all (the "
                             "GPU's throughput), each in ROOT/seed<N> (ROOT: --run-dir, default runs/<preset>-<time>) "
                             "as --seed N alone would train it (its streams bit for bit, its weights within float32 "
                             "rounding); "
                             "--resume ROOT --seeds ... continues them; not with --seed, --recipe or torchrun")
    add_config_flags(parser, TrainConfig, CHOICES)
    return parser


def seed_list(text: str) -> list[int]:
    """An argparse ``type``: distinct seeds, comma-separated, each checked as --seed is."""
    seeds = [SEED(part.strip()) for part in text.split(",")]
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"the seeds must be distinct, got {text!r}")
    return seeds


def main(argv: list[str] | None = None, figures: Figures | None = None, description: str | None = None) -> dict | None:
    """The trainer's command line: one run, a --recipe's stages, or --list-presets. ``figures``: what draws a
    finished run's figures (train/ram_agent.py passes agents.figures.draw_run_figures)."""
    parser = build_parser(description)
    args = parser.parse_args(argv)
    dist = Distributed()
    try:
        dist = init_distributed(args.dist_timeout_minutes, args.threads)
        # The other ranks print nothing but errors (stderr): progress and results come from rank 0.
        with nullcontext(sys.stdout) if dist.main else open(os.devnull, "w") as out, redirect_stdout(out):
            if args.list_presets:
                list_presets()
                return None
            if args.seeds is not None:
                refuse_seeds_with(args, dist)
            if args.recipe and (args.resume or hasattr(args, "init_from") or hasattr(args, "preset")):
                raise ConfigError(flag_message("--recipe", "starts each stage from the one before and continues by "
                                               "itself: run the same --recipe command again instead of --resume; "
                                               "--init-from and --preset (the recipe names its own) do not apply"))
            launcher = ["python"] if not dist.active else \
                ["torchrun", f"--nnodes={dist.world_size // dist.local_world_size}",
                 f"--nproc_per_node={dist.local_world_size}"]
            command = [*launcher, *sys.argv] if argv is None else [*launcher, "train/ram_agent.py", *argv]
            if args.seeds is not None:
                return SeedGroup(seed_configs(args), command, bool(args.resume), figures).train()
            if args.recipe:
                return run_recipe(args, command, dist, figures)
            config = dist.from_rank0(lambda: resolve_config(args))
            return train(config, command, resume=bool(args.resume), dist=dist, figures=figures)
    except ConfigError as error:
        refuse(parser, error, dist)
    finally:
        dist.close()


def refuse(parser: argparse.ArgumentParser, error: ConfigError, dist: Distributed) -> NoReturn:
    """``error: ...`` and exit status 2, as argparse does (said once, by rank 0, under torchrun)."""
    if dist.main:
        parser.error(str(error))
    raise SystemExit(2)


def refuse_seeds_with(args: argparse.Namespace, dist: Distributed) -> None:
    """--seeds trains its seeds in one process: not with --seed, --recipe or torchrun."""
    clash = "--seed (each run's seed comes from --seeds)" if hasattr(args, "seed") else \
        "--recipe (train each seed's recipe with --recipe ... --seed N)" if args.recipe else \
        "torchrun (the seeds share one process and its device: run python train/ram_agent.py)" if dist.active \
        else None
    if clash:
        raise ConfigError(flag_message("--seeds", f"not with {clash}"))


def seed_configs(args: argparse.Namespace) -> list[TrainConfig]:
    """The configuration of each seed of --seeds: the run --seed N alone would train, in ROOT/seed<N>; with
    --resume ROOT, each seed's own run folder continued."""
    if args.resume:
        return [resolve_config(argparse.Namespace(**{**vars(args), "resume": str(Path(args.resume) / f"seed{seed}")}))
                for seed in args.seeds]
    preset = getattr(args, "preset", TrainConfig.preset)
    root = Path(getattr(args, "run_dir", "") or f"runs/{preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    return [resolve_config(argparse.Namespace(**{**vars(args), "seed": seed, "run_dir": str(root / f"seed{seed}")}))
            for seed in args.seeds]


def list_presets() -> None:
    for name, values in PRESETS.items():
        print(f"{name:18s} {values}")
    for name, stages in RECIPES.items():
        print(f"--recipe {name}: " + " -> ".join(str(stage) for stage in stages))


def run_recipe(args: argparse.Namespace, command: list[str], dist: Distributed, figures: Figures | None) -> dict:
    """Train the stages of ``--recipe`` in turn (see RECIPES); a finished stage is skipped, a started one resumed.
    Every stage's configuration is checked before the first starts."""
    explicit = explicit_flags(args, TrainConfig)
    root = Path(explicit.pop("run_dir", "") or f"runs/{args.recipe}-recipe")
    count = len(RECIPES[args.recipe])
    for number in range(1, count + 1):
        config, started = dist.from_rank0(partial(recipe_stage, args, explicit, root, number))
        if not started:
            check_config(config, dist.world_size)
    results: dict = {}
    for number in range(1, count + 1):
        config, started = dist.from_rank0(partial(recipe_stage, args, explicit, root, number))
        print(f"--recipe {args.recipe}: stage {number} of {count} in {config.run_dir}")
        results = train(config, [*command, f"# stage {number} of {count}"], resume=started, dist=dist,
                        figures=figures)
    return results


def recipe_stage(args: argparse.Namespace, explicit: dict, root: Path, number: int) -> tuple[TrainConfig, bool]:
    """The configuration of stage ``number`` of ``--recipe``, and whether it was started before (then its own
    config.json goes on, as with --resume)."""
    stage_dir = root / f"stage{number}"
    if (stage_dir / "config.json").is_file():
        return resolve_config(argparse.Namespace(**{**vars(args), "resume": str(stage_dir)})), True
    init = {"init_from": str(root / f"stage{number - 1}" / "best.pt")} if number > 1 else {}
    return new_run_config({**stage_values(args.recipe, number), **explicit, **init, "run_dir": str(stage_dir)},
                          explicit), False


# ---------------------------------------------------------------- train/evaluate.py


def evaluate_parser(description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                        help="checkpoints written by train/ram_agent.py (best.pt), or names of shipped agents "
                             "(mnist28-6g: the .pt files of assets/checkpoints/)")
    parser.add_argument("--split", default="test", choices=list(SPLIT_SIZES), help="which digits (default: test)")
    parser.add_argument("--mc", type=int_in(0), default=10, help="K sampled location paths per image; 0 skips it")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--slots", type=int_in(1), default=5000, help="episodes played at once")
    parser.add_argument("--num-images", type=int_in(1), default=None,
                        help="evaluate only the split's first N images (default: all); for quick checks")
    parser.add_argument("--seed", type=SEED, default=0, help="seed of first locations and sampled paths")
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: $GLIMPSE_MNIST_DIR or download)")
    parser.add_argument("--locations", default="policy", choices=["policy", "random", "center"],
                        help="policy: the learned one; random/center: non-learning baselines with the trained "
                             "classifier")
    parser.add_argument("--json", action="store_true", help="print each result as a line of JSON")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table of all results")
    return parser


def check_evaluate_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> torch.device:
    """Every flag and every checkpoint, checked before the first evaluation (each number by its argparse type, the
    rest here, in the same words); the device."""
    if args.num_images is not None:
        size = SPLIT_SIZES[args.split]
        try:
            _check_int("num_images", args.num_images, 1, f"in [1, {size}] (the {args.split} split)", size)
        except ValueError as error:
            fail(parser, "--num-images", str(error).removeprefix("num_images "))
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        fail(parser, "--device", f"{args.device}: {error}")
    for checkpoint in args.checkpoints:
        try:
            load_agent(checkpoint)
        except (FileNotFoundError, ValueError) as error:
            fail(parser, "CHECKPOINT", f"{checkpoint}: {error}")
    load_split(parser, args.split, args.data_dir)
    return device


def evaluate_main(argv: list[str] | None = None, description: str | None = None) -> None:
    """train/evaluate.py: errors of checkpoints on a split, as text, JSON lines or a markdown table."""
    parser = evaluate_parser(description)
    args = parser.parse_args(argv)
    check_evaluate_args(parser, args)
    if args.markdown:
        first = "deterministic" if args.locations == "policy" else f"{args.locations} locations"
        split = args.split
        print(f"| checkpoint | env | first glimpse | {split} error, {first} | {split} error, MC K={args.mc} |")
        print("|---|---|---|---|---|")
    for checkpoint in args.checkpoints:
        result = evaluate_checkpoint(checkpoint, args.split, args.mc, args.device, args.slots, args.seed,
                                     args.data_dir, args.num_images, args.locations)
        if args.markdown:
            print(markdown_row(checkpoint, result, args.locations))
        elif args.json:
            print(json.dumps({"checkpoint": str(checkpoint), **result}))
        else:
            print(f"{checkpoint}: {format_result(result)}")


def markdown_row(checkpoint: str, result: dict, locations: str) -> str:
    loaded = load_agent(checkpoint)
    env = ", ".join(f"{k}={v}" for k, v in loaded.env_kwargs.items() if k != "first_location")
    learned = loaded.model.config.learn_first_location and locations == "policy"
    where = "learned" if learned else ("center" if locations == "center" else
                                       loaded.env_kwargs.get("first_location", "random"))
    mc = f"{100 * result['mc_error']:.2f}%" if "mc_error" in result else "-"
    return f"| `{Path(checkpoint).name}` | {env} | {where} | {100 * result['error']:.2f}% | {mc} |"
