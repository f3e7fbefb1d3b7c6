"""A stable-baselines3 agent on GlimpseMNIST-v0: what a user would try instead of the Recurrent Attention Model.
train/sb3_baseline.py is its command line (see its docstring for the agent, the budget and the measurements).

The agent is sb3-contrib's ``RecurrentPPO("MultiInputLstmPolicy")`` (default) or SB3's ``PPO("MultiInputPolicy")``,
trained for a fixed budget of environment steps on ``FlattenAction(gym.make("GlimpseMNIST-v0", ...))``. Presets
are the RAM trainer's (:data:`agents.training.PRESETS`; only their task arguments are used). Imported on demand:
``import agents.training`` does not import stable-baselines3.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

import glimpse_env  # noqa: F401  (registers GlimpseMNIST-v0)
from agents.training.config import (
    ENV_CHOICES,
    TaskConfig,
    TrainConfig,
    add_config_flags,
    explicit_flags,
    naming_the_flag,
    option,
)
from agents.training.presets import PRESETS
from glimpse_env.config import _check_int
from glimpse_env.data import SPLIT_SIZES, DigitSet
from glimpse_env.wrappers import FlattenAction

ALGOS = ("recurrent-ppo", "ppo")
RAM_TRAIN_IMAGES = SPLIT_SIZES["train"]  # one RAM epoch shows each image in mc_samples slots
# SB3 seeds numpy's legacy global generator (np.random.seed), which takes only [0, 2**32 - 1]: narrower than the
# project's MAX_SEED, so this command line's --seed has this bound.
SB3_MAX_SEED = 2**32 - 1
# The flags checked here, in the env's words: (smallest, largest or None, how the range is said).
INT_BOUNDS = {"timesteps": (1, None, ">= 1"), "n_envs": (1, None, ">= 1"), "n_steps": (1, None, ">= 1"),
              "batch_size": (1, None, ">= 1"), "n_epochs": (1, None, ">= 1"), "threads": (0, None, ">= 0"),
              "seed": (0, SB3_MAX_SEED, "in [0, 2**32 - 1] (SB3 seeds numpy's legacy generator)")}


@dataclass
class BaselineConfig(TaskConfig):
    """Every hyperparameter of a baseline run; each one is also a command-line flag."""

    algo: str = option("recurrent-ppo", "recurrent-ppo (sb3-contrib, MultiInputLstmPolicy) or ppo (MultiInputPolicy)")
    score_bound: float = option(1.0, "FlattenAction's bound on the 10 class scores")
    # learning
    timesteps: int = option(900_000, "environment steps to train for, all envs together (whole rollouts: a bit more)")
    n_envs: int = option(8, "environments stepped together (make_vec_env, DummyVecEnv)")
    n_steps: int = option(128, "steps per env per rollout (rollout = n_steps * n_envs steps)")
    batch_size: int = option(256, "minibatch size of the PPO update, in steps")
    n_epochs: int = option(10, "PPO epochs over each rollout")
    learning_rate: float = option(3e-4, "Adam learning rate")
    gamma: float = option(0.99, "discount factor")
    gae_lambda: float = option(0.95, "GAE lambda")
    clip_range: float = option(0.2, "PPO clipping range")
    ent_coef: float = option(0.0, "entropy bonus coefficient")
    vf_coef: float = option(0.5, "value loss coefficient")
    max_grad_norm: float = option(0.5, "clip the gradient's global norm to this")
    lstm_hidden_size: int = option(256, "LSTM units (recurrent-ppo only)")
    # evaluation
    eval_images: int = option(10_000, "test digits to play at the end (0 or more than the split: all of them)")
    eval_envs: int = option(500, "single envs stepped in lockstep during evaluation (one predict call per step)")
    # the run
    seed: int = option(0, "seed of the envs, the policy and the evaluation's first locations")
    device: str = option("cpu", "torch device of the policy (cpu is fastest for these small networks)")
    threads: int = option(0, "torch intra-op threads (0: torch's default)")
    run_dir: str = option("", "run folder (default: runs/sb3-<preset>-<algo>-<time>)")
    data_dir: str = option("", "MNIST folder (default: $GLIMPSE_MNIST_DIR, else a download)")
    verbose: int = option(0, "SB3 verbosity (0: quiet, 1: a table per rollout)")


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    choices = {"preset": list(PRESETS), "algo": list(ALGOS), **ENV_CHOICES}
    add_config_flags(parser, BaselineConfig, choices)
    return parser


TASK_FIELDS = {f.name for f in dataclasses.fields(TaskConfig)}


def resolve_config(args: argparse.Namespace) -> BaselineConfig:
    """Defaults, then the preset's task arguments, then explicit flags."""
    explicit = explicit_flags(args, BaselineConfig)
    preset = explicit.get("preset", BaselineConfig.preset)
    task = {k: v for k, v in PRESETS[preset].items() if k in TASK_FIELDS}  # a preset may set RAM-only options too
    return BaselineConfig(**{**task, **explicit, "preset": preset})


def make_model(config: BaselineConfig, env: DummyVecEnv) -> BaseAlgorithm:
    common = dict(n_steps=config.n_steps, batch_size=config.batch_size, n_epochs=config.n_epochs,
                  learning_rate=config.learning_rate, gamma=config.gamma, gae_lambda=config.gae_lambda,
                  clip_range=config.clip_range, ent_coef=config.ent_coef, vf_coef=config.vf_coef,
                  max_grad_norm=config.max_grad_norm, seed=config.seed, device=config.device,
                  verbose=config.verbose)
    if config.algo == "recurrent-ppo":
        return RecurrentPPO("MultiInputLstmPolicy", env, policy_kwargs=dict(lstm_hidden_size=config.lstm_hidden_size),
                            **common)
    return PPO("MultiInputPolicy", env, **common)


def evaluate_model(model: BaseAlgorithm, config: BaselineConfig, digits: DigitSet | None = None) -> dict[str, Any]:
    """Test error of the deterministic policy: each test digit played once, ``eval_envs`` episodes in lockstep.

    Every episode lasts exactly ``n_glimpses`` steps, so a batch of single envs starts and ends together and one
    ``predict`` call on the stacked observations (and the stacked LSTM state) acts for all of them.
    """
    data_dir = config.data_dir or None
    width = max(1, config.eval_envs)
    envs = [FlattenAction(gym.make("GlimpseMNIST-v0", split="test", data_dir=data_dir, digits=digits,
                                   **config.env_kwargs()), config.score_bound) for _ in range(width)]
    for j, env in enumerate(envs):  # seeds the first glimpse's location, reproducibly
        env.reset(seed=config.seed + j)
    total = len(envs[0].unwrapped._batch.digits)
    num_images = min(config.eval_images, total) if config.eval_images > 0 else total
    recurrent = isinstance(model, RecurrentPPO)
    correct = 0
    started = time.perf_counter()
    for first in range(0, num_images, width):
        batch = envs[: min(width, num_images - first)]
        observations = [env.reset(options={"index": first + j})[0] for j, env in enumerate(batch)]
        state = None
        episode_start = np.ones(len(batch), dtype=bool)
        for _ in range(config.n_glimpses):  # an episode is n_glimpses steps; the last one grades the scores
            stacked = {key: np.stack([obs[key] for obs in observations]) for key in observations[0]}
            if recurrent:
                actions, state = model.predict(stacked, state=state, episode_start=episode_start, deterministic=True)
            else:
                actions, _ = model.predict(stacked, deterministic=True)
            episode_start[:] = False
            steps = [env.step(action) for env, action in zip(batch, actions, strict=True)]
            observations = [step[0] for step in steps]
        if not all(step[2] for step in steps):
            raise RuntimeError("an evaluation episode did not terminate after n_glimpses steps")
        correct += sum(int(step[1] > 0) for step in steps)
    for env in envs:
        env.close()
    return {"split": "test", "error": 1.0 - correct / num_images, "num_images": num_images,
            "policy": "deterministic", "seconds": round(time.perf_counter() - started, 2)}


def train(config: BaselineConfig, command: list[str], digits: DigitSet | None = None) -> dict[str, Any]:
    """Trains, saves and evaluates one baseline; ``digits`` replaces both splits' digits (tests use a fixture)."""
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    if not config.run_dir:
        config.run_dir = f"runs/sb3-{config.preset}-{config.algo}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    (run_dir / "command.txt").write_text(" ".join(command) + "\n")

    env = make_vec_env("GlimpseMNIST-v0", n_envs=config.n_envs, seed=config.seed, vec_env_cls=DummyVecEnv,
                       env_kwargs=dict(split="train", data_dir=config.data_dir or None, digits=digits,
                                       **config.env_kwargs()),
                       wrapper_class=FlattenAction, wrapper_kwargs=dict(score_bound=config.score_bound))
    model = make_model(config, env)
    started = time.perf_counter()
    model.learn(total_timesteps=config.timesteps, progress_bar=False)
    train_seconds = time.perf_counter() - started
    steps_trained = int(model.num_timesteps)  # whole rollouts: at least the budget
    env.close()
    model.save(run_dir / "model.zip")

    test = evaluate_model(model, config, digits)
    mc_samples = TrainConfig.mc_samples
    episodes = steps_trained / config.n_glimpses
    results = {
        "preset": config.preset, "algo": config.algo, "test": test,
        "timesteps": config.timesteps, "env_steps_trained": steps_trained,
        "env_steps_per_episode": config.n_glimpses, "episodes_equivalent": episodes,
        "ram_epochs_equivalent": episodes / (RAM_TRAIN_IMAGES * mc_samples), "ram_mc_samples_assumed": mc_samples,
        "train_seconds": round(train_seconds, 1), "steps_per_second": round(steps_trained / train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1), "device": config.device,
        "torch_threads": torch.get_num_threads(), "command": " ".join(command),
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"sb3 {config.algo} {config.preset}: test error {100 * test['error']:.2f}% (deterministic policy) on "
          f"{test['num_images']} images; {steps_trained} env steps = {episodes:.0f} episodes_equivalent "
          f"({results['ram_epochs_equivalent']:.3f} RAM epochs at M={mc_samples}); "
          f"{train_seconds / 60:.1f} min, {results['steps_per_second']:.0f} steps/s; run folder {run_dir}")
    return results


def main(argv: list[str] | None = None, digits: DigitSet | None = None,
         description: str | None = None) -> dict[str, Any]:
    """train/sb3_baseline.py's command line; ``digits`` replaces both splits' digits (tests use a fixture)."""
    parser = build_parser(description)
    config = resolve_config(parser.parse_args(argv))
    for name, (low, high, allowed) in INT_BOUNDS.items():
        try:
            _check_int(name, getattr(config, name), low, allowed, high)
        except ValueError as error:
            parser.error(naming_the_flag(str(error), BaselineConfig))
    command = ["python", *sys.argv] if argv is None else ["python", "train/sb3_baseline.py", *argv]
    return train(config, command, digits)
