"""The single environment ``GlimpseMNIST-v0``: spaces, episodes, rewards, validation, Gymnasium's checker."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from glimpse_env import ENV_ID
from glimpse_env.data import DigitSet, load_digits
from glimpse_env.env import GlimpseMNISTEnv
from glimpse_env.retina import retina

# The paper's four benchmarks: (size, scales, glimpse_size, clutter).
VARIANTS = [(28, 1, 8, 0), (60, 3, 12, 0), (60, 3, 12, 4), (100, 4, 12, 8)]


def act(location: Any = (0.0, 0.0), prediction: Any = None) -> dict[str, np.ndarray]:
    scores = np.zeros(10, np.float32) if prediction is None else np.asarray(prediction, np.float32)
    return {"location": np.asarray(location, np.float32), "prediction": scores}


def one_hot(label: int, value: float = 5.0) -> np.ndarray:
    scores = np.zeros(10, np.float32)
    scores[label] = value
    return scores


def log_softmax(scores: np.ndarray) -> np.ndarray:
    return torch.log_softmax(torch.as_tensor(scores, dtype=torch.float32), dim=-1).numpy()


@pytest.fixture
def make(tiny_digits: DigitSet):
    def build(**kwargs: Any) -> GlimpseMNISTEnv:
        return GlimpseMNISTEnv(digits=tiny_digits, **kwargs)

    return build


# --- spaces
@pytest.mark.parametrize(("size", "scales", "glimpse_size", "clutter"), VARIANTS)
def test_spaces_and_shapes_of_the_paper_variants(
    tiny_digits: DigitSet, size: int, scales: int, glimpse_size: int, clutter: int
) -> None:
    env = gym.make(
        ENV_ID, size=size, scales=scales, glimpse_size=glimpse_size, clutter=clutter, digits=tiny_digits
    )
    obs_space, act_space = env.observation_space, env.action_space
    assert isinstance(obs_space, gym.spaces.Dict) and set(obs_space) == {"glimpse", "location"}
    assert obs_space["glimpse"] == gym.spaces.Box(0.0, 1.0, (scales, glimpse_size, glimpse_size), np.float32)
    assert obs_space["location"] == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    assert isinstance(act_space, gym.spaces.Dict) and set(act_space) == {"location", "prediction"}
    assert act_space["location"] == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    assert act_space["prediction"] == gym.spaces.Box(-np.inf, np.inf, (10,), np.float32)

    observation, info = env.reset(seed=0)
    assert info == {}
    assert obs_space.contains(observation)
    assert observation["glimpse"].dtype == np.float32
    assert observation["glimpse"].shape == (scales, glimpse_size, glimpse_size)
    for _ in range(5):
        observation, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert obs_space.contains(observation) and isinstance(reward, float)
        assert isinstance(terminated, bool) and truncated is False
    assert env.unwrapped.canvas.shape == (size, size)


def test_defaults_are_the_documented_ones(make) -> None:
    env = make()
    config = env.config
    assert (config.size, config.scales, config.glimpse_size, config.n_glimpses, config.clutter) == (28, 1, 8, 6, 0)
    assert (config.split, config.reward, config.first_location, env.render_mode) == ("train", "sparse", "random", None)


# --- episodes
@pytest.mark.parametrize("n_glimpses", [1, 3, 6])
def test_episode_is_n_glimpses_steps_and_the_label_comes_only_at_the_end(make, tiny_digits, n_glimpses: int) -> None:
    env = make(size=60, scales=3, glimpse_size=12, n_glimpses=n_glimpses)
    for episode in range(2):
        observation, info = env.reset(seed=episode, options={"index": 42 + episode})
        assert "label" not in info
        steps, terminated = 0, False
        while not terminated:
            previous = observation
            observation, reward, terminated, truncated, info = env.step(act((0.3, -0.2)))
            steps += 1
            assert truncated is False
            if not terminated:
                assert "label" not in info and reward == 0.0
        assert steps == n_glimpses
        assert info["label"] == int(tiny_digits.labels[42 + episode]) and isinstance(info["label"], int)
        np.testing.assert_array_equal(observation["glimpse"], previous["glimpse"])  # the terminal step repeats it
        assert len(env.glimpse_locations) == n_glimpses


def test_first_glimpse_is_centred_or_uniformly_random(make) -> None:
    centred = make(size=60, first_location="center")
    observation, _ = centred.reset(seed=0)
    np.testing.assert_array_equal(observation["location"], [0.0, 0.0])
    randomly = make(size=60)
    firsts = np.array([randomly.reset(seed=seed)[0]["location"] for seed in range(200)])
    assert firsts.min() >= -1.0 and firsts.max() <= 1.0
    assert firsts.min() < -0.8 and firsts.max() > 0.8 and abs(firsts.mean()) < 0.15
    chosen, _ = randomly.reset(seed=0, options={"index": 3, "location": (0.5, -0.25)})
    np.testing.assert_array_equal(chosen["location"], [0.5, -0.25])  # where the agent asked, not at random
    with pytest.raises(ValueError, match=r"options\['location'\] must have shape \(2,\)"):
        randomly.reset(options={"location": (0.5, 0.5, 0.5)})
    with pytest.raises(ValueError, match="finite"):
        randomly.reset(options={"location": (float("nan"), 0.0)})


@pytest.mark.parametrize(("size", "scales", "glimpse_size", "clutter"), VARIANTS)
def test_observation_is_the_retina_at_the_asked_location(
    make, size: int, scales: int, glimpse_size: int, clutter: int
) -> None:
    env = make(size=size, scales=scales, glimpse_size=glimpse_size, clutter=clutter, n_glimpses=8)
    observation, _ = env.reset(seed=3)
    canvas = torch.from_numpy(env.canvas)[None]

    def expected(location: np.ndarray) -> np.ndarray:
        return retina(canvas, torch.as_tensor(location)[None], glimpse_size, scales)[0].numpy()

    np.testing.assert_array_equal(observation["glimpse"], expected(observation["location"]))
    asked = [(0.1, -0.4), (-1.0, -1.0), (1.0, 1.0), (2.5, -0.3), (-7.0, 9.0), (0.999, -1.001), (0.0, 0.0)]
    for location in asked:
        observation, *_ = env.step(act(location))
        clipped = np.clip(np.asarray(location, np.float32), -1.0, 1.0)
        np.testing.assert_array_equal(observation["location"], clipped)
        np.testing.assert_array_equal(observation["glimpse"], expected(clipped))
    np.testing.assert_array_equal(env.glimpse_locations[1:], np.clip(np.array(asked, np.float32), -1, 1))


# --- rewards
def test_sparse_reward_grades_the_final_prediction(make, tiny_digits: DigitSet) -> None:
    env = make(n_glimpses=3)
    for index in (0, 1, 2, 3):
        label = int(tiny_digits.labels[index])
        for correct in (True, False):
            env.reset(seed=index, options={"index": index})
            rewards = [env.step(act(prediction=one_hot(label)))[1] for _ in range(2)]  # right, but too early
            guess = label if correct else (label + 1) % 10
            _, reward, terminated, _, info = env.step(act(prediction=one_hot(guess)))
            assert rewards == [0.0, 0.0] and terminated and info["label"] == label
            assert reward == (1.0 if correct else 0.0)


def test_dense_reward_is_the_log_probability_of_the_label_every_step(make, tiny_digits: DigitSet) -> None:
    env = make(n_glimpses=4, reward="dense")
    label = int(tiny_digits.labels[7])
    env.reset(seed=0, options={"index": 7})
    generator = np.random.default_rng(0)
    for step in range(4):
        scores = generator.normal(size=10).astype(np.float32) * 3
        _, reward, terminated, _, _ = env.step(act(prediction=scores))
        assert reward == pytest.approx(float(log_softmax(scores)[label]), abs=1e-5)
        assert reward < 0 and terminated == (step == 3)


# --- determinism
def run_episodes(env: gym.Env, seed: int, episodes: int = 3) -> list:
    trace = []
    rng = np.random.default_rng(123)
    observation, _ = env.reset(seed=seed)
    for _ in range(episodes):
        terminated = False
        trace.append(observation["glimpse"].copy())
        while not terminated:
            action = act(rng.uniform(-1, 1, 2), rng.normal(size=10))
            observation, reward, terminated, _, info = env.step(action)
            trace += [observation["glimpse"].copy(), observation["location"].copy(), reward]
        trace.append(info["label"])
        observation, _ = env.reset()  # unseeded: continues the seeded stream
    return trace


def traces_equal(first: list, second: list) -> bool:
    return len(first) == len(second) and all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))


def test_same_seed_same_episodes(make) -> None:
    kwargs = {"size": 60, "scales": 3, "glimpse_size": 12, "clutter": 4}
    assert traces_equal(run_episodes(make(**kwargs), seed=7), run_episodes(make(**kwargs), seed=7))
    assert not traces_equal(run_episodes(make(**kwargs), seed=7), run_episodes(make(**kwargs), seed=8))


def test_same_seed_same_episodes_through_gym_make(tiny_digits: DigitSet) -> None:
    def build() -> gym.Env:
        return gym.make(ENV_ID, size=60, scales=3, glimpse_size=12, digits=tiny_digits)

    assert traces_equal(run_episodes(build(), seed=11), run_episodes(build(), seed=11))


def test_reset_with_an_index_presents_that_digit(make, tiny_digits: DigitSet) -> None:
    env = make(size=28)
    for index in (0, 299, 5, 5):
        env.reset(options={"index": index})
        np.testing.assert_array_equal(env.canvas, tiny_digits.images[index].numpy())
        for _ in range(5):
            env.step(act())
        assert env.step(act())[4]["label"] == int(tiny_digits.labels[index])


# --- bad inputs
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"size": 20}, "size"),
        ({"size": 60.0}, "size"),
        ({"scales": 0}, "scales"),
        ({"scales": True}, "scales"),
        ({"glimpse_size": 0}, "glimpse_size"),
        ({"glimpse_size": 29}, "glimpse_size"),
        ({"size": 28, "scales": 4, "glimpse_size": 12}, "scales"),  # a 96-pixel scale on a 28-pixel canvas
        ({"n_glimpses": 0}, "n_glimpses"),
        ({"clutter": -1}, "clutter"),
        ({"split": "training"}, "split"),
        ({"reward": "shaped"}, "reward"),
        ({"first_location": "corner"}, "first_location"),
        ({"render_mode": "ansi"}, "render_mode"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_parameter(make, kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make(**kwargs)


def test_unknown_choices_list_the_allowed_values(make) -> None:
    with pytest.raises(ValueError, match="'train', 'validation', 'test'"):
        make(split="training")
    with pytest.raises(ValueError, match="'sparse', 'dense'"):
        make(reward="shaped")


@pytest.mark.parametrize(
    ("action", "name"),
    [
        (act(location=(np.nan, 0.0)), "location"),
        (act(location=(0.0, np.inf)), "location"),
        (act(prediction=[0.0] * 9 + [np.nan]), "prediction"),
        (act(prediction=[-np.inf] + [0.0] * 9), "prediction"),
        (act(location=(0.0, 0.0, 0.0)), "location"),
        (act(location=[[0.0, 0.0]]), "location"),
        (act(prediction=[0.0] * 9), "prediction"),
        ({"location": np.zeros(2, np.float32)}, "prediction"),
        ({"location": np.zeros(2), "prediction": np.zeros(10), "extra": 1}, "action"),
        (np.zeros(12, np.float32), "action"),
    ],
)
def test_bad_actions_raise_value_error(make, action: Any, name: str) -> None:
    env = make()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=name):
        env.step(action)
    env.step(act())  # the env is still usable


BAD_OPTIONS = [{"index": 300}, {"index": -1}, {"index": 1.0}, {"index": True}, {"indices": 0}]


@pytest.mark.parametrize("options", BAD_OPTIONS)
def test_bad_reset_options_raise_value_error(make, options: dict) -> None:
    with pytest.raises(ValueError, match="index"):
        make().reset(options=options)


def test_stepping_before_reset_or_after_termination_is_a_runtime_error(make) -> None:
    env = make(n_glimpses=2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(act())
    env.reset(seed=0)
    env.step(act())
    assert env.step(act())[2] is True
    with pytest.raises(RuntimeError, match="reset"):
        env.step(act())
    env.reset()
    env.step(act())  # fine again


# --- checkers and registration
ALLOWED_CHECKER_WARNINGS = ("infinity", "symmetric and normalized", "render")


@pytest.mark.parametrize(("size", "scales", "glimpse_size", "clutter"), [VARIANTS[0], VARIANTS[3]])
def test_gymnasium_env_checker_passes(tiny_digits, size: int, scales: int, glimpse_size: int, clutter: int) -> None:
    env = gym.make(
        ENV_ID, size=size, scales=scales, glimpse_size=glimpse_size, clutter=clutter, digits=tiny_digits
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    unexpected = [str(w.message) for w in caught if not any(k in str(w.message) for k in ALLOWED_CHECKER_WARNINGS)]
    assert unexpected == []  # only the by-design unbounded class scores are remarked upon


def test_the_id_is_registered_with_both_entry_points() -> None:
    spec = gym.spec(ENV_ID)
    assert spec.entry_point == "glimpse_env.env:GlimpseMNISTEnv"
    assert spec.vector_entry_point == "glimpse_env.vector_env:GlimpseMNISTVectorEnv"


# --- full MNIST
def test_full_mnist_envs_share_one_copy_of_the_digits(mnist_dir: Path) -> None:
    first = gym.make(ENV_ID, size=60, scales=3, glimpse_size=12, data_dir=mnist_dir)
    second = gym.make(ENV_ID, data_dir=mnist_dir)
    assert first.unwrapped._batch.digits is second.unwrapped._batch.digits is load_digits("train", mnist_dir)
    test_env = gym.make(ENV_ID, split="test", data_dir=mnist_dir)
    test_env.reset(seed=0, options={"index": 0})
    for _ in range(5):
        test_env.step(act())
    assert test_env.step(act())[4]["label"] == 7  # the first MNIST test digit is a 7


def test_full_mnist_through_the_environment_variable(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIMPSE_MNIST_DIR", str(mnist_dir))
    env = gym.make(ENV_ID, size=60, scales=3, glimpse_size=12, split="validation")
    observation, _ = env.reset(seed=0, options={"index": 4999})
    assert observation["glimpse"].shape == (3, 12, 12)
    with pytest.raises(ValueError, match="index"):
        env.reset(options={"index": 5000})
