"""``FlattenAction``: one ``Box(12)`` action so that stable-baselines3 can drive GlimpseMNIST."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from glimpse_env import ENV_ID
from glimpse_env.data import DigitSet
from glimpse_env.wrappers import FlattenAction


@pytest.fixture
def wrapped(tiny_digits: DigitSet) -> FlattenAction:
    return FlattenAction(gym.make(ENV_ID, size=60, scales=3, glimpse_size=12, n_glimpses=4, digits=tiny_digits))


def test_action_space_is_one_bounded_box(wrapped: FlattenAction) -> None:
    space = wrapped.action_space
    assert isinstance(space, gym.spaces.Box) and space.shape == (12,) and space.dtype == np.float32
    np.testing.assert_array_equal(space.low, [-1.0] * 12)
    np.testing.assert_array_equal(space.high, [1.0] * 12)
    assert FlattenAction(wrapped.env, score_bound=5.0).action_space.high[2] == 5.0
    with pytest.raises(ValueError, match="score_bound"):
        FlattenAction(wrapped.env, score_bound=0.0)


def test_flat_action_is_location_then_scores(wrapped: FlattenAction, tiny_digits: DigitSet) -> None:
    label = int(tiny_digits.labels[11])
    wrapped.reset(seed=0, options={"index": 11})
    flat = np.zeros(12, np.float32)
    flat[:2] = [0.25, -0.5]
    flat[2 + label] = 1.0
    observation, *_ = wrapped.step(flat)
    np.testing.assert_array_equal(observation["location"], [0.25, -0.5])
    for _ in range(3):
        _, reward, terminated, _, info = wrapped.step(flat)
    assert terminated and info["label"] == label and reward == 1.0
    with pytest.raises(ValueError, match="shape"):
        wrapped.step(np.zeros(11, np.float32))


def test_stable_baselines3_checker_passes(wrapped: FlattenAction) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sb3_check_env(wrapped, warn=True)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "action" in m.lower()], messages  # the flat action box is fine for SB3


def test_ppo_trains_a_few_hundred_steps(wrapped: FlattenAction) -> None:
    model = PPO("MultiInputPolicy", wrapped, n_steps=64, batch_size=64, seed=0, device="cpu", verbose=0)
    model.learn(total_timesteps=256)
    assert model.num_timesteps >= 256
    observation, _ = wrapped.reset(seed=1)
    action, _ = model.predict(observation, deterministic=True)
    assert action.shape == (12,) and wrapped.action_space.contains(action)
