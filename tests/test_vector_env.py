"""The natively batched env (``gym.make_vec``): torch tensors, batched episodes, autoreset, validation, CUDA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from glimpse_env import ENV_ID
from glimpse_env.canvas import evaluation_layouts
from glimpse_env.data import DigitSet
from glimpse_env.env import GlimpseMNISTEnv
from glimpse_env.retina import retina
from glimpse_env.vector_env import GlimpseMNISTVectorEnv

VARIANTS = [(28, 1, 8, 0), (60, 3, 12, 0), (60, 3, 12, 4), (100, 4, 12, 8)]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")


def actions(n: int, location: Any = None, prediction: Any = None, device: str = "cpu") -> dict[str, torch.Tensor]:
    return {
        "location": torch.zeros(n, 2, device=device) if location is None else torch.as_tensor(location).to(device),
        "prediction": torch.zeros(n, 10, device=device)
        if prediction is None
        else torch.as_tensor(prediction, dtype=torch.float32).to(device),
    }


@pytest.fixture
def make(tiny_digits: DigitSet):
    def build(num_envs: int = 8, **kwargs: Any) -> GlimpseMNISTVectorEnv:
        return GlimpseMNISTVectorEnv(num_envs=num_envs, digits=tiny_digits, **kwargs)

    return build


# --- construction, spaces
@pytest.mark.parametrize(("size", "scales", "glimpse_size", "clutter"), VARIANTS)
def test_make_vec_gives_the_batched_env_with_torch_tensors(
    tiny_digits: DigitSet, size: int, scales: int, glimpse_size: int, clutter: int
) -> None:
    kwargs = {"size": size, "scales": scales, "glimpse_size": glimpse_size, "clutter": clutter}
    env = gym.make_vec(ENV_ID, num_envs=6, digits=tiny_digits, **kwargs)
    assert isinstance(env.unwrapped, GlimpseMNISTVectorEnv) and env.num_envs == 6
    single = GlimpseMNISTEnv(digits=tiny_digits, **kwargs)
    assert env.single_observation_space == single.observation_space
    assert env.single_action_space == single.action_space
    assert env.observation_space["glimpse"].shape == (6, scales, glimpse_size, glimpse_size)
    assert env.action_space["prediction"].shape == (6, 10)

    observation, info = env.reset(seed=0)
    assert info == {}
    glimpse, location = observation["glimpse"], observation["location"]
    assert isinstance(glimpse, torch.Tensor) and glimpse.dtype == torch.float32 and glimpse.device.type == "cpu"
    assert glimpse.shape == (6, scales, glimpse_size, glimpse_size) and location.shape == (6, 2)
    assert float(glimpse.min()) >= 0.0 and float(glimpse.max()) <= 1.0
    assert float(location.abs().max()) <= 1.0
    observation, reward, terminated, truncated, info = env.step(actions(6))
    assert reward.shape == terminated.shape == truncated.shape == (6,)
    assert reward.dtype == torch.float32 and terminated.dtype == truncated.dtype == torch.bool
    assert env.unwrapped.canvases.shape == (6, size, size)


def test_numpy_actions_are_accepted(make) -> None:
    env = make(4)
    env.reset(seed=0)
    sample = env.action_space.sample()
    observation, *_ = env.step({key: np.asarray(value) for key, value in sample.items()})
    torch.testing.assert_close(observation["location"], torch.as_tensor(sample["location"]).clamp(-1, 1))


def test_array_conversion_wrapper_gives_numpy(make) -> None:
    from gymnasium.wrappers.vector import ArrayConversion

    envs = ArrayConversion(make(num_envs=3), env_xp=torch, target_xp=np)
    observation, _ = envs.reset(seed=0)
    assert isinstance(observation["glimpse"], np.ndarray) and observation["glimpse"].shape == (3, 1, 8, 8)
    zeros = {"location": np.zeros((3, 2), np.float32), "prediction": np.zeros((3, 10), np.float32)}
    observation, reward, terminated, truncated, _ = envs.step(zeros)
    assert isinstance(reward, np.ndarray) and reward.shape == (3,) and terminated.dtype == np.bool_


def test_sync_vector_of_single_envs_steps_too(tiny_digits: DigitSet) -> None:
    env = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="sync", size=60, digits=tiny_digits)
    assert isinstance(env, gym.vector.SyncVectorEnv)
    observation, _ = env.reset(seed=0)
    assert isinstance(observation["glimpse"], np.ndarray) and observation["glimpse"].shape == (3, 1, 8, 8)
    for step in range(6):
        _, _, terminated, _, info = env.step(env.action_space.sample())
        assert terminated.all() == (step == 5)
    assert info["label"].shape == (3,)


# --- episodes
@pytest.mark.parametrize("n_glimpses", [1, 4])
def test_batch_terminates_together_with_labels_at_the_end(make, tiny_digits, n_glimpses: int) -> None:
    env = make(5, size=60, n_glimpses=n_glimpses)
    indices = torch.tensor([3, 3, 150, 299, 0])
    observation, info = env.reset(seed=0, options={"indices": indices})
    assert "label" not in info
    for step in range(n_glimpses):
        observation, reward, terminated, truncated, info = env.step(actions(5))
        if step < n_glimpses - 1:
            assert not terminated.any() and "label" not in info and torch.all(reward == 0)
    assert terminated.all() and not truncated.any()
    assert torch.equal(info["label"], tiny_digits.labels[indices]) and info["label"].dtype == torch.int64
    assert info["_label"].all()
    assert env.locations.shape == (5, n_glimpses, 2)


def test_next_step_autoreset(make) -> None:
    env = make(4, size=60, n_glimpses=2, first_location="center")
    env.reset(seed=0, options={"indices": torch.tensor([1, 2, 3, 4])})
    env.step(actions(4))
    _, _, terminated, _, _ = env.step(actions(4))
    assert terminated.all()
    # The step after termination starts new episodes; its action is ignored.
    observation, reward, terminated, truncated, info = env.step(actions(4, location=torch.full((4, 2), 0.5)))
    assert torch.all(reward == 0) and not terminated.any() and not truncated.any() and info == {}
    assert torch.all(observation["location"] == 0)  # the new episode's first glimpse, at the centre
    assert env.elapsed_glimpses == 1
    assert not torch.equal(env.indices, torch.tensor([1, 2, 3, 4]))  # fresh random digits
    env.step(actions(4))
    _, _, terminated, _, info = env.step(actions(4))
    assert terminated.all() and torch.equal(info["label"], env.labels)


def test_observation_is_the_retina_at_the_asked_location(make) -> None:
    env = make(16, size=60, scales=3, glimpse_size=12, clutter=4, n_glimpses=4)
    observation, _ = env.reset(seed=1)
    canvases = env.canvases
    torch.testing.assert_close(observation["glimpse"], retina(canvases, observation["location"], 12, 3))
    generator = torch.Generator().manual_seed(0)
    for scale in (1.0, 3.0, 1.0):  # 3.0: most asks are outside the square and are clipped
        asked = (torch.rand(16, 2, generator=generator) * 2 - 1) * scale
        asked[0] = torch.tensor([-1.0, 1.0])
        observation, *_ = env.step(actions(16, location=asked))
        clipped = asked.clamp(-1, 1)
        assert torch.equal(observation["location"], clipped)
        assert torch.equal(observation["glimpse"], retina(canvases, clipped, 12, 3))


def test_repeated_indices_show_the_same_image(make) -> None:
    env = make(6, size=60, clutter=4, split="test", first_location="center")
    observation, _ = env.reset(seed=0, options={"indices": torch.tensor([9, 9, 9, 4, 4, 9])})
    glimpses = observation["glimpse"]
    for b in (1, 2, 5):
        assert torch.equal(glimpses[b], glimpses[0])
    assert torch.equal(glimpses[3], glimpses[4])
    assert torch.equal(env.labels[[0, 1, 2, 5]], env.labels[0].expand(4))
    assert torch.equal(env.canvases[1], env.canvases[0]) and torch.equal(env.canvases[4], env.canvases[3])
    # Different locations on one image: the trainer's M samples per digit.
    location = torch.linspace(-0.9, 0.9, 12).reshape(6, 2)
    observation, *_ = env.step(actions(6, location=location))
    expected = retina(env.canvases[0].expand(6, 60, 60), location, 8, 1)
    assert torch.equal(observation["glimpse"][[0, 1, 2, 5]], expected[[0, 1, 2, 5]])


@pytest.mark.parametrize("split", ["train", "test"])
def test_slots_per_canvas_share_one_canvas(make, split: str) -> None:
    env = make(12, size=60, scales=3, glimpse_size=12, clutter=4, split=split, first_location="center")
    indices = torch.tensor([5, 5, 5, 9, 9, 9, 5, 5, 5, 2, 2, 2])
    env.reset(seed=0, options={"indices": indices, "slots_per_canvas": 3})
    canvases = env.canvases
    for group in range(4):
        assert all(torch.equal(canvases[3 * group + i], canvases[3 * group]) for i in (1, 2))
    if split == "train":  # fresh layouts per canvas: the two canvases of digit 5 differ
        assert not torch.equal(canvases[0], canvases[6])
    else:  # evaluation canvases are fixed per index
        assert torch.equal(canvases[0], canvases[6])
    # The glimpses are the retina of those canvases, wherever each slot looks.
    location = torch.linspace(-0.9, 0.9, 24).reshape(12, 2)
    observation, *_ = env.step(actions(12, location=location))
    assert torch.equal(observation["glimpse"], retina(canvases, location, 12, 3))
    # Without the option, each slot of a training batch gets its own canvas.
    env.reset(seed=0, options={"indices": indices})
    assert split == "test" or not torch.equal(env.canvases[0], env.canvases[1])


@pytest.mark.parametrize("clutter", [0, 3])
def test_slots_per_canvas_without_indices_and_refusals(make, clutter: int) -> None:
    env = make(6, size=60, clutter=clutter)
    env.reset(seed=1, options={"slots_per_canvas": 2})
    assert torch.equal(env.indices[0::2], env.indices[1::2])
    assert torch.equal(env.canvases[0::2], env.canvases[1::2])
    for bad in (0, 4, True, 2.0, "2"):
        with pytest.raises(ValueError, match="slots_per_canvas"):
            env.reset(options={"slots_per_canvas": bad})
    with pytest.raises(ValueError, match="slots_per_canvas=2"):
        env.reset(options={"indices": torch.tensor([1, 1, 2, 3, 4, 4]), "slots_per_canvas": 2})


@pytest.mark.parametrize(("split", "clutter"), [("train", 0), ("train", 4), ("test", 0), ("test", 4)])
def test_digit_offsets_say_where_each_digit_sits(make, tiny_digits: DigitSet, split: str, clutter: int) -> None:
    env = make(6, size=60, clutter=clutter, split=split)
    assert env.digit_offsets is None  # before the first reset
    indices = torch.tensor([3, 3, 8, 8, 250, 250])
    env.reset(seed=2, options={"indices": indices, "slots_per_canvas": 2})
    offsets = env.digit_offsets
    assert offsets.dtype == torch.int64 and offsets.shape == (6, 2) and offsets.device == env.device
    assert torch.equal(offsets[0::2], offsets[1::2])  # the slots of one canvas share its digit
    assert bool((offsets >= 0).all() and (offsets <= 60 - 28).all())
    if split == "test":  # the fixed evaluation canvases
        assert torch.equal(offsets, evaluation_layouts(len(tiny_digits), 60, clutter, env.device).digit_offset[indices])
    for canvas, (x, y), index in zip(env.canvases, offsets.tolist(), indices, strict=True):
        digit, placed = tiny_digits.images[index], canvas[y : y + 28, x : x + 28]
        assert bool((placed >= digit).all())  # distractors add to the digit, clipped to 255
        if clutter == 0:  # the canvas is the digit there, and black elsewhere
            assert torch.equal(placed, digit) and int(canvas.sum()) == int(digit.sum())
    offsets[:] = -1  # a copy: changing it changes nothing in the env
    assert bool((env.digit_offsets >= 0).all())


# --- rewards
def test_sparse_and_dense_rewards(make, tiny_digits: DigitSet) -> None:
    indices = torch.arange(8) * 7
    labels = tiny_digits.labels[indices]
    right = torch.nn.functional.one_hot(labels, 10).float() * 3
    guess = right.clone()
    guess[::2] = torch.nn.functional.one_hot((labels[::2] + 1) % 10, 10).float() * 3  # even slots wrong

    sparse = make(8, n_glimpses=2)
    sparse.reset(seed=0, options={"indices": indices})
    _, early, *_ = sparse.step(actions(8, prediction=right))
    _, final, terminated, _, _ = sparse.step(actions(8, prediction=guess))
    assert torch.all(early == 0) and terminated.all()
    assert torch.equal(final, torch.tensor([0.0, 1.0] * 4))

    dense = make(8, n_glimpses=2, reward="dense")
    dense.reset(seed=0, options={"indices": indices})
    scores = torch.randn(8, 10, generator=torch.Generator().manual_seed(0))
    expected = torch.log_softmax(scores, dim=-1)[torch.arange(8), labels]
    for _ in range(2):
        _, reward, *_ = dense.step(actions(8, prediction=scores))
        torch.testing.assert_close(reward, expected)


# --- determinism and one source of truth
def run(env: GlimpseMNISTVectorEnv, seed: int, steps: int = 14) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(99)
    trace = []
    observation, _ = env.reset(seed=seed)
    trace += [observation["glimpse"], observation["location"], env.indices]
    for _ in range(steps):  # crosses two autoresets
        action = actions(env.num_envs, torch.rand(env.num_envs, 2, generator=generator) * 2 - 1)
        observation, reward, terminated, _, info = env.step(action)
        trace += [observation["glimpse"].clone(), observation["location"].clone(), reward, terminated]
        trace += [info["label"]] if "label" in info else []
    return trace


def same(first: list[torch.Tensor], second: list[torch.Tensor]) -> bool:
    return len(first) == len(second) and all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


@pytest.mark.parametrize("clutter", [0, 4])
def test_same_seed_same_batches(make, clutter: int) -> None:
    kwargs = {"size": 60, "scales": 3, "glimpse_size": 12, "clutter": clutter}
    assert same(run(make(16, **kwargs), seed=5), run(make(16, **kwargs), seed=5))
    assert not same(run(make(16, **kwargs), seed=5), run(make(16, **kwargs), seed=6))


def test_the_single_env_is_the_batched_env_with_one_slot(make, tiny_digits: DigitSet) -> None:
    kwargs = {"size": 60, "scales": 3, "glimpse_size": 12, "clutter": 4, "n_glimpses": 3}
    single = GlimpseMNISTEnv(digits=tiny_digits, **kwargs)
    batched = make(1, **kwargs)
    single_observation, _ = single.reset(seed=21)
    batched_observation, _ = batched.reset(seed=21)
    np.testing.assert_array_equal(single_observation["glimpse"], batched_observation["glimpse"][0].numpy())
    np.testing.assert_array_equal(single.canvas, batched.canvases[0].numpy())
    for location in ([0.2, -0.5], [0.9, 0.9], [0.0, 0.0]):
        single_step = single.step({"location": np.array(location, np.float32), "prediction": np.zeros(10)})
        batched_step = batched.step(actions(1, location=[location]))
        np.testing.assert_array_equal(single_step[0]["glimpse"], batched_step[0]["glimpse"][0].numpy())
        assert single_step[1:3] == (float(batched_step[1][0]), bool(batched_step[2][0]))
    assert single_step[4]["label"] == int(batched_step[4]["label"][0])


# --- bad inputs
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_envs": 0}, "num_envs"),
        ({"num_envs": 2.0}, "num_envs"),
        ({"num_envs": True}, "num_envs"),
        ({"size": 20}, "size"),
        ({"scales": 0}, "scales"),
        ({"glimpse_size": 0}, "glimpse_size"),
        ({"size": 60, "scales": 5, "glimpse_size": 12}, "scales"),
        ({"n_glimpses": 0}, "n_glimpses"),
        ({"clutter": -1}, "clutter"),
        ({"split": "train_set"}, "split"),
        ({"reward": "none"}, "reward"),
        ({"first_location": "left"}, "first_location"),
        ({"render_mode": "rgb_array"}, "render_mode"),
        ({"device": "not-a-device"}, "device"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_parameter(tiny_digits, kwargs: dict, name: str) -> None:
    kwargs = {"num_envs": 2, **kwargs}
    with pytest.raises(ValueError, match=name):
        GlimpseMNISTVectorEnv(digits=tiny_digits, **kwargs)
    with pytest.raises(ValueError, match=name):
        gym.make_vec(ENV_ID, digits=tiny_digits, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error when CUDA is absent")
def test_asking_for_absent_cuda_is_a_value_error(tiny_digits: DigitSet) -> None:
    with pytest.raises(ValueError, match="device"):
        GlimpseMNISTVectorEnv(num_envs=2, device="cuda", digits=tiny_digits)


@pytest.mark.parametrize(
    ("action", "name"),
    [
        (actions(4, location=torch.tensor([[0.0, float("nan")]] * 4)), "location"),
        (actions(4, location=torch.tensor([[float("inf"), 0.0]] * 4)), "location"),
        (actions(4, prediction=torch.full((4, 10), float("nan"))), "prediction"),
        (actions(4, prediction=torch.tensor([[float("-inf")] + [0.0] * 9] * 4)), "prediction"),
        (actions(4, location=torch.zeros(3, 2)), "location"),
        (actions(4, location=torch.zeros(4, 3)), "location"),
        (actions(4, location=torch.zeros(8)), "location"),
        (actions(4, prediction=torch.zeros(4, 9)), "prediction"),
        ({"location": torch.zeros(4, 2)}, "prediction"),
        (torch.zeros(4, 12), "actions"),
    ],
)
def test_bad_actions_raise_value_error(make, action: Any, name: str) -> None:
    env = make(4)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=name):
        env.step(action)
    env.step(actions(4))  # still usable


@pytest.mark.parametrize(
    "indices",
    [
        torch.tensor([0, 1, 2, 300]),
        torch.tensor([-1, 0, 0, 0]),
        torch.tensor([0.0, 1.0, 2.0, 3.0]),
        torch.tensor([True, False, True, False]),
        torch.tensor([0, 1, 2]),
        torch.zeros(4, 1, dtype=torch.long),
    ],
)
def test_bad_indices_raise_value_error(make, indices: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="indices"):
        make(4).reset(options={"indices": indices})


def test_indices_may_be_a_list_or_an_array(make, tiny_digits: DigitSet) -> None:
    env = make(4)
    env.reset(options={"indices": [5, 6, 7, 5]})
    assert torch.equal(env.labels, tiny_digits.labels[[5, 6, 7, 5]])
    env.reset(options={"indices": np.array([1, 1, 1, 1])})
    assert torch.equal(env.indices, torch.ones(4, dtype=torch.long))


def test_reset_may_choose_the_first_location(make) -> None:
    env = make(3, size=60, scales=3, glimpse_size=12, clutter=4, first_location="random")
    asked = torch.tensor([[0.5, -0.25], [3.0, -1.0], [0.0, 0.0]])
    observation, _ = env.reset(seed=0, options={"location": asked})
    assert torch.equal(observation["location"], asked.clamp(-1, 1))  # clipped, as a step's location is
    torch.testing.assert_close(observation["glimpse"], retina(env.canvases, asked.clamp(-1, 1), 12, 3))
    assert torch.equal(env.locations[:, 0], asked.clamp(-1, 1))
    for bad, match in ((torch.zeros(2, 2), "shape"), (torch.full((3, 2), float("nan")), "finite")):
        with pytest.raises(ValueError, match=r"options\['location'\].*" + match):
            env.reset(options={"location": bad})


def test_unknown_reset_option_and_step_before_reset(make) -> None:
    with pytest.raises(ValueError, match="indices"):
        make(2).reset(options={"index": 1})
    with pytest.raises(RuntimeError, match="reset"):
        make(2).step(actions(2))


# --- full MNIST and CUDA
def test_full_mnist_batched(mnist_dir: Path) -> None:
    env = gym.make_vec(ENV_ID, num_envs=64, size=60, scales=3, glimpse_size=12, split="test", data_dir=mnist_dir)
    env.reset(seed=0, options={"indices": torch.arange(64) * 150})
    for _ in range(6):
        _, _, terminated, _, info = env.step(actions(64))
    assert terminated.all() and int(info["label"][0]) == 7
    assert info["label"].tolist() == env.unwrapped.digits.labels[torch.arange(64) * 150].tolist()


@needs_cuda
def test_cuda_batches_stay_on_the_gpu_and_match_the_cpu(tiny_digits: DigitSet) -> None:
    kwargs = {"size": 60, "scales": 3, "glimpse_size": 12, "clutter": 4, "split": "test", "first_location": "center"}
    gpu = gym.make_vec(ENV_ID, num_envs=32, device="cuda", digits=tiny_digits, **kwargs)
    cpu = gym.make_vec(ENV_ID, num_envs=32, device="cpu", digits=tiny_digits, **kwargs)
    indices = torch.arange(32) * 9
    gpu_observation, _ = gpu.reset(seed=0, options={"indices": indices.cuda()})
    cpu_observation, _ = cpu.reset(seed=0, options={"indices": indices})
    assert gpu_observation["glimpse"].device.type == "cuda"
    assert torch.equal(gpu.unwrapped.canvases.cpu(), cpu.unwrapped.canvases)  # the fixed test layouts
    torch.testing.assert_close(gpu_observation["glimpse"].cpu(), cpu_observation["glimpse"], atol=1e-6, rtol=0)
    location = torch.rand(32, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    gpu_step = gpu.step(actions(32, location=location, device="cuda"))
    cpu_step = cpu.step(actions(32, location=location))
    assert gpu_step[1].device.type == gpu_step[2].device.type == "cuda"
    torch.testing.assert_close(gpu_step[0]["glimpse"].cpu(), cpu_step[0]["glimpse"], atol=1e-6, rtol=0)


@needs_cuda
def test_cuda_episodes_run_to_the_end_with_labels_on_the_gpu(tiny_digits: DigitSet) -> None:
    env = gym.make_vec(ENV_ID, num_envs=128, device="cuda", size=100, scales=4, glimpse_size=12, clutter=8,
                       digits=tiny_digits)
    assert same(run(env.unwrapped, seed=3), run(env.unwrapped, seed=3))
    env.reset(seed=0)
    for _ in range(6):
        _, reward, terminated, _, info = env.step(actions(128, device="cuda"))
    assert terminated.all() and info["label"].device.type == "cuda" and reward.device.type == "cuda"
