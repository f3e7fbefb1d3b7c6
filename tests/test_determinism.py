"""Determinism: the same seed gives the same episodes (glimpses, labels, canvases) in the single and the vector env,
different seeds give different ones, and evaluating a fixed model is the same twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agents import RAMConfig, RecurrentAttentionModel, evaluate, load_agent, save_agent
from glimpse_env.data import DigitSet
from glimpse_env.env import GlimpseMNISTEnv
from glimpse_env.vector_env import GlimpseMNISTVectorEnv

# (size, scales, glimpse_size, clutter): plain, translated and cluttered canvases.
TASKS = [(28, 1, 8, 0), (60, 3, 12, 0), (60, 3, 12, 4)]


def task(size: int, scales: int, glimpse_size: int, clutter: int, **more: Any) -> dict[str, Any]:
    return {"size": size, "scales": scales, "glimpse_size": glimpse_size, "clutter": clutter, "n_glimpses": 3, **more}


def single_episodes(env: GlimpseMNISTEnv, seed: int, episodes: int = 4) -> list[np.ndarray | int]:
    """Everything the env shows over a few episodes (only the first reset is seeded): glimpses, locations,
    canvases, rewards, labels; with actions from a fixed generator."""
    actions = np.random.default_rng(0)
    trace: list[np.ndarray | int] = []
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed if episode == 0 else None)
        trace += [observation["glimpse"], observation["location"], env.canvas.copy()]
        terminated = False
        while not terminated:
            action = {"location": actions.uniform(-1, 1, 2), "prediction": actions.normal(size=10)}
            observation, reward, terminated, _, info = env.step(action)
            trace += [observation["glimpse"], observation["location"], np.float32(reward)]
        trace.append(info["label"])
    return trace


def vector_episodes(env: GlimpseMNISTVectorEnv, seed: int, steps: int = 10, **options: Any) -> list[torch.Tensor]:
    """The same for the vector env, across autoresets (the batch's episodes end together every 4 steps)."""
    actions = torch.Generator().manual_seed(0)
    observation, _ = env.reset(seed=seed, options=options or None)
    trace = [observation["glimpse"], observation["location"], env.canvases, env.labels]
    for _ in range(steps):
        location = torch.rand(env.num_envs, 2, generator=actions) * 2 - 1
        prediction = torch.randn(env.num_envs, 10, generator=actions)
        observation, reward, terminated, _, info = env.step({"location": location, "prediction": prediction})
        trace += [observation["glimpse"].clone(), observation["location"].clone(), reward, terminated]
        trace += [env.canvases.clone(), env.labels.clone()] + ([info["label"]] if "label" in info else [])
    return trace


def equal(first: list, second: list) -> bool:
    same = (torch.equal if isinstance(a, torch.Tensor) else np.array_equal for a in first)
    return len(first) == len(second) and all(eq(a, b) for eq, a, b in zip(same, first, second, strict=True))


PLAYERS = {  # how to build each env, and play it
    "single": (GlimpseMNISTEnv, single_episodes),
    "vector": (lambda **kwargs: GlimpseMNISTVectorEnv(8, **kwargs), vector_episodes),
}


@pytest.mark.parametrize("kind", sorted(PLAYERS))
@pytest.mark.parametrize("geometry", TASKS)
@pytest.mark.parametrize("split", ["train", "test"])
def test_same_seed_same_episodes_other_seed_other_episodes(
    tiny_digits: DigitSet, kind: str, geometry: tuple, split: str
) -> None:
    build, play = PLAYERS[kind]
    kwargs = task(*geometry, split=split, digits=tiny_digits)
    first = play(build(**kwargs), seed=123)
    assert equal(first, play(build(**kwargs), seed=123))
    assert not equal(first, play(build(**kwargs), seed=124))
    env = build(**kwargs)  # and one env, reseeded, repeats itself
    play(env, seed=5)
    assert equal(play(env, seed=123), first)


def test_vector_env_with_chosen_indices_and_shared_canvases_is_deterministic(tiny_digits: DigitSet) -> None:
    kwargs = task(60, 3, 12, 4, digits=tiny_digits)
    options = {"indices": torch.arange(4).repeat_interleave(2), "slots_per_canvas": 2}
    first = vector_episodes(GlimpseMNISTVectorEnv(8, **kwargs), seed=3, **options)
    assert equal(first, vector_episodes(GlimpseMNISTVectorEnv(8, **kwargs), seed=3, **options))
    assert not equal(first, vector_episodes(GlimpseMNISTVectorEnv(8, **kwargs), seed=4, **options))


def test_evaluation_splits_show_the_same_canvases_whatever_the_seed(tiny_digits: DigitSet) -> None:
    """Everyone evaluates on the same canvases: the test split's layouts do not depend on the seed."""
    kwargs = task(60, 3, 12, 4, split="test", digits=tiny_digits)
    indices = {"indices": torch.arange(8) * 30}
    canvases = [GlimpseMNISTVectorEnv(8, **kwargs) for _ in range(2)]
    canvases[0].reset(seed=0, options=indices)
    canvases[1].reset(seed=99, options=indices)
    assert torch.equal(canvases[0].canvases, canvases[1].canvases)
    single = GlimpseMNISTEnv(**kwargs)
    single.reset(seed=42, options={"index": 30})
    np.testing.assert_array_equal(single.canvas, canvases[0].canvases[1].numpy())


def test_the_single_env_and_the_vector_env_agree_seed_for_seed(tiny_digits: DigitSet) -> None:
    kwargs = task(60, 3, 12, 4, digits=tiny_digits)
    single, batched = GlimpseMNISTEnv(**kwargs), GlimpseMNISTVectorEnv(1, **kwargs)
    for seed in (0, 17):
        observation, _ = single.reset(seed=seed)
        batched_observation, _ = batched.reset(seed=seed)
        np.testing.assert_array_equal(observation["glimpse"], batched_observation["glimpse"][0].numpy())
        np.testing.assert_array_equal(single.canvas, batched.canvases[0].numpy())


@pytest.fixture
def model(tiny_digits: DigitSet) -> RecurrentAttentionModel:
    torch.manual_seed(0)
    config = RAMConfig(scales=3, glimpse_size=12, what_hidden=32, where_hidden=16, glimpse_out=32, core_size=32)
    return RecurrentAttentionModel(config)


@pytest.mark.parametrize("locations", ["policy", "random"])
def test_evaluation_of_a_fixed_model_is_the_same_twice(
    tiny_digits: DigitSet, model: RecurrentAttentionModel, tmp_path: Path, locations: str
) -> None:
    """Deterministic error and Monte-Carlo error (sampled paths, seeded generator) repeat exactly: on fresh envs,
    on the same env again, and for the model saved and loaded back."""
    kwargs = task(60, 3, 12, 4, split="test", digits=tiny_digits)

    def run(model: RecurrentAttentionModel, env: GlimpseMNISTVectorEnv | None = None) -> dict[str, float]:
        env = env or GlimpseMNISTVectorEnv(40, **kwargs)
        env.reset(seed=0)
        generator = torch.Generator().manual_seed(0)
        return evaluate(model, env, num_images=100, mc_samples=4, generator=generator, locations=locations)

    first = run(model)
    assert set(first) == {"error", "mc_error"}
    assert run(model) == first
    env = GlimpseMNISTVectorEnv(40, **kwargs)
    assert run(model, env) == run(model, env) == first
    save_agent(tmp_path / "agent.pt", model, {key: kwargs[key] for key in ("size", "scales", "glimpse_size")})
    assert run(load_agent(tmp_path / "agent.pt").model) == first
