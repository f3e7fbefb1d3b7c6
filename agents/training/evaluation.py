"""Error rates of a model: a checkpoint on a split (what train/evaluate.py and a run's final test report), the
trainer's validation, and both split over the ranks of a torchrun job (each rank counts its part; the counts add).

Monte-Carlo errors average class probabilities over K sampled location paths per image (:func:`agents.evaluate`).
"""

from __future__ import annotations

import os
import time
from typing import Any

import gymnasium as gym
import torch

import glimpse_env  # noqa: F401  (registers GlimpseMNIST-v0)
from agents import RecurrentAttentionModel, evaluate, load_agent
from agents.training.config import TrainConfig
from agents.training.distributed import Distributed, rank_seed
from agents.training.precision import autocast
from glimpse_env.config import _check_choice, _check_int, resolve_device
from glimpse_env.data import SPLIT_SIZES  # with the data, its one home; imported here for this module's readers


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
) -> dict[str, Any]:
    """Errors of the checkpoint's model on ``split`` (all its images unless ``num_images``), seeded.

    ``checkpoint`` is a file or the name of a shipped agent. ``locations="random"`` or ``"center"`` evaluates the
    non-learning baselines: the trained glimpse network, core and classifier, looking at random locations or only at
    the centre (the first glimpse included).
    """
    # The env's checks, in their words (one family of checks for every argument and flag).
    slots = _check_int("slots", slots, 1, ">= 1")
    _check_choice("split", split, tuple(SPLIT_SIZES))
    available = SPLIT_SIZES[split]
    num_images = num_images or available
    num_images = _check_int("num_images", num_images, 1, f"in [1, {available}] (the {split} split)", available)
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


def format_result(result: dict[str, Any]) -> str:
    where = result.get("locations", "policy")
    first = "deterministic policy" if where == "policy" else f"{where} locations"
    text = f"{result['split']} error {100 * result['error']:.2f}% ({first})"
    if "mc_error" in result:
        paths = "sampled" if where == "policy" else where
        text += f", {100 * result['mc_error']:.2f}% (Monte-Carlo over {result['mc_samples']} {paths} paths)"
    return text + f" on {result['num_images']} images"


def validate(model: RecurrentAttentionModel, val_env: Any, val_images: torch.Tensor, num_val: int,
             config: TrainConfig, seed: int, device: torch.device, autocast_dtype: torch.dtype | None,
             dist: Distributed) -> dict:
    """The validation error of ``model``, with the same first locations and noise at every call."""
    val_env.reset(seed=seed)
    with autocast(device, autocast_dtype):
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
    """The test errors of ``model`` (the best checkpoint's weights and location noise), the split (or its first
    ``config.test_subset`` images) shared among the ranks. Monte-Carlo paths are drawn from each rank's own stream,
    and so are the env's random first glimpses: the deterministic error is what :func:`evaluate_checkpoint` reports
    for one process only when the agent learned its first glimpse (then nothing in it is random); with the env's
    random first glimpse it differs a little, as it does between seeds."""
    started = time.perf_counter()
    images = dist.shard(torch.arange(config.test_subset or SPLIT_SIZES["test"]))
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
