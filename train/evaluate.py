"""Evaluate trained RAM checkpoints on GlimpseMNIST: test error with the deterministic policy and with
Monte-Carlo averaging of class probabilities over K sampled location paths.

    python train/evaluate.py assets/checkpoints/mnist28-6g.pt --mc 10
    python train/evaluate.py assets/checkpoints/*.pt --markdown     # the README's results table, re-computed
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import gymnasium as gym
import torch

import glimpse_env  # noqa: F401  (registers GlimpseMNIST-v0)
from agents import evaluate, load_agent
from glimpse_env.vector_env import resolve_device

SPLIT_SIZES = {"train": 55_000, "validation": 5_000, "test": 10_000}


def evaluate_checkpoint(
    checkpoint: str | os.PathLike,
    split: str = "test",
    mc_samples: int = 10,
    device: str = "auto",
    slots: int = 5000,
    seed: int = 0,
    data_dir: str | None = None,
    num_images: int | None = None,
    locations: str = "policy",
) -> dict[str, float]:
    """Errors of the checkpoint's model on ``split`` (all its images unless ``num_images``), seeded.

    ``locations="random"`` or ``"center"`` evaluates the non-learning baselines: the trained glimpse network,
    core and classifier, looking at random locations or only at the centre (the first glimpse included).
    """
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise ValueError(f"slots must be an integer >= 1, got {slots!r}")
    if split not in SPLIT_SIZES:
        raise ValueError(f"split must be one of {list(SPLIT_SIZES)}, got {split!r}")
    available = SPLIT_SIZES[split]
    num_images = num_images or available
    if isinstance(num_images, bool) or not isinstance(num_images, int) or not 1 <= num_images <= available:
        raise ValueError(f"num_images must be an integer in [1, {available}] (the {split} split), got {num_images!r}")
    device = resolve_device(device)
    loaded = load_agent(checkpoint, device)
    env_kwargs = dict(loaded.env_kwargs)
    if locations == "center":
        env_kwargs["first_location"] = "center"
    slots = min(slots, num_images)  # no more episodes at once than images: a quick check on a few stays quick
    env = gym.make_vec("GlimpseMNIST-v0", num_envs=slots, device=device, split=split, data_dir=data_dir, **env_kwargs)
    env.reset(seed=seed)
    generator = torch.Generator(device=device).manual_seed(seed)
    started = time.perf_counter()
    result = evaluate(loaded.model, env, num_images, mc_samples, generator, locations)
    result.update(split=split, num_images=num_images, mc_samples=mc_samples, seed=seed, locations=locations,
                  seconds=round(time.perf_counter() - started, 2))
    env.close()
    return result


def format_result(result: dict[str, float]) -> str:
    where = result.get("locations", "policy")
    first = "deterministic policy" if where == "policy" else f"{where} locations"
    text = f"{result['split']} error {100 * result['error']:.2f}% ({first})"
    if "mc_error" in result:
        paths = "sampled" if where == "policy" else where
        text += f", {100 * result['mc_error']:.2f}% (Monte-Carlo over {result['mc_samples']} {paths} paths)"
    return text + f" on {result['num_images']} images"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                        help="checkpoints written by train/ram_agent.py (best.pt, or those in assets/checkpoints/)")
    parser.add_argument("--split", default="test", choices=list(SPLIT_SIZES), help="which digits (default: test)")
    parser.add_argument("--mc", type=int, default=10, help="K sampled location paths per image; 0 skips it")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--slots", type=int, default=5000, help="episodes played at once")
    parser.add_argument("--num-images", type=int, default=None,
                        help="evaluate only the split's first N images (default: all); for quick checks")
    parser.add_argument("--seed", type=int, default=0, help="seed of first locations and sampled paths")
    parser.add_argument("--data-dir", default=None, help="MNIST folder (default: $GLIMPSE_MNIST_DIR or download)")
    parser.add_argument("--locations", default="policy", choices=["policy", "random", "center"],
                        help="policy: the learned one; random/center: non-learning baselines with the trained "
                             "classifier")
    parser.add_argument("--json", action="store_true", help="print each result as a line of JSON")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table of all results")
    args = parser.parse_args(argv)
    if args.mc < 0:
        parser.error("--mc must be >= 0")
    if args.slots < 1:
        parser.error("--slots must be >= 1")
    if args.num_images is not None and not 1 <= args.num_images <= SPLIT_SIZES[args.split]:
        parser.error(f"--num-images must be in [1, {SPLIT_SIZES[args.split]}] for --split {args.split}")
    for checkpoint in args.checkpoints:
        if not Path(checkpoint).is_file():
            parser.error(f"checkpoint {checkpoint} does not exist")
    if args.markdown:
        first = "deterministic" if args.locations == "policy" else f"{args.locations} locations"
        split = args.split
        print(f"| checkpoint | env | first glimpse | {split} error, {first} | {split} error, MC K={args.mc} |")
        print("|---|---|---|---|---|")
    for checkpoint in args.checkpoints:
        result = evaluate_checkpoint(checkpoint, args.split, args.mc, args.device, args.slots, args.seed,
                                     args.data_dir, args.num_images, args.locations)
        if args.markdown:
            loaded = load_agent(checkpoint)
            env = ", ".join(f"{k}={v}" for k, v in loaded.env_kwargs.items() if k != "first_location")
            learned = loaded.model.config.learn_first_location and args.locations == "policy"
            where = "learned" if learned else ("center" if args.locations == "center" else
                                               loaded.env_kwargs.get("first_location", "random"))
            mc = f"{100 * result['mc_error']:.2f}%" if "mc_error" in result else "-"
            print(f"| `{Path(checkpoint).name}` | {env} | {where} | {100 * result['error']:.2f}% | {mc} |")
        elif args.json:
            print(json.dumps({"checkpoint": str(checkpoint), **result}))
        else:
            print(f"{checkpoint}: {format_result(result)}")


if __name__ == "__main__":
    sys.exit(main())
