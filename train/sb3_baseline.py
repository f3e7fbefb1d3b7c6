"""A stable-baselines3 agent on GlimpseMNIST-v0: what a user would try instead of the Recurrent Attention Model.

    python train/sb3_baseline.py                                   # RecurrentPPO (LSTM), 28x28 MNIST, 6 glimpses
    python train/sb3_baseline.py --preset translated60-4g          # 60x60 translated MNIST, 4 glimpses
    python train/sb3_baseline.py --algo ppo --timesteps 200000     # plain PPO (no memory), another budget

The agent is sb3-contrib's ``RecurrentPPO("MultiInputLstmPolicy")`` (default) or SB3's ``PPO("MultiInputPolicy")``,
trained for a fixed budget of environment steps on ``FlattenAction(gym.make("GlimpseMNIST-v0", ...))`` (the action
is one Box(12): the next glimpse's location, then 10 class scores in ``[-score_bound, score_bound]``), in
``--n-envs`` envs made by SB3's ``make_vec_env``. It learns from the env's sparse reward only (1 iff the final
scores' argmax is the label): no cross-entropy on the label, unlike the RAM agent's hybrid loss.

Presets are those of train/ram_agent.py. An episode is ``n_glimpses`` environment steps, as in the RAM agent, so
``episodes_equivalent = timesteps / n_glimpses`` is the number of RAM training episodes (image x sampled path)
the same budget buys; results.json also gives it in RAM epochs (55,000 images x mc_samples paths each).

The default budget, 900,000 steps, is 41 min of RecurrentPPO on mnist28-6g on one CPU thread (367 steps/s); on
translated60-4g RecurrentPPO ran at ~220 steps/s beside another run, so the README's row uses --timesteps 600000
(45.5 min). Measured with OMP_NUM_THREADS=1; plain PPO is ~1,700 steps/s.

The test error is measured once, at the end, on the test split's deterministic canvases: every test digit played
once (``reset(options={"index": i})``) with the deterministic policy; an episode is an error when its final reward
is 0. A run folder (default runs/sb3-<preset>-<algo>-<time>) holds config.json, model.zip and results.json.
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
from glimpse_env.data import DigitSet
from glimpse_env.wrappers import FlattenAction

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling scripts, also when imported from tests
from ram_agent import PRESETS, TaskConfig, TrainConfig, add_config_flags, explicit_flags, option  # noqa: E402

ALGOS = ("recurrent-ppo", "ppo")
RAM_TRAIN_IMAGES = 55_000  # the train split: one RAM epoch shows each image in mc_samples slots


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, BaselineConfig, {"preset": list(PRESETS), "algo": list(ALGOS)})
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
    if config.first_location not in ("random", "center"):
        raise SystemExit(f"--first-location must be random or center; got {config.first_location!r}")
    if config.timesteps < 1 or config.n_envs < 1:
        raise SystemExit("--timesteps and --n-envs must be >= 1")
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


def main(argv: list[str] | None = None, digits: DigitSet | None = None) -> dict[str, Any]:
    config = resolve_config(build_parser().parse_args(argv))
    command = ["python", *sys.argv] if argv is None else ["python", "train/sb3_baseline.py", *argv]
    return train(config, command, digits)


if __name__ == "__main__":
    main()
