"""The bad-input battery (issue 11): every bad input is a clear error, nothing is coerced, no file is changed.

Property-based (hypothesis) over the envs' constructor arguments, actions (single and vector env; numpy arrays,
torch tensors, Python containers), reset options and seeds, damaged checkpoints and damaged MNIST folders. Each case
must raise exactly an allowed type (``ValueError``; ``FileNotFoundError`` for a missing file) whose message names the
parameter (or the file): never an exception from inside numpy or torch. A refused call leaves the env as it was, and
a file it read byte-identical. The distinct cases tried are counted and printed at the end of the run (conftest.py).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import re
import struct
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from agents import RAMConfig, RecurrentAttentionModel, load_agent, save_agent
from agents.checkpoint import FORMAT, read_checkpoint
from glimpse_env.data import CACHE_ENV_VAR, ENV_VAR, MNIST_MD5, DigitSet, load_digits
from glimpse_env.env import GlimpseMNISTEnv
from glimpse_env.vector_env import GlimpseMNISTVectorEnv
from glimpse_env.wrappers import FlattenAction

# Derandomized, so that a run is repeatable and its count of cases stable; no example database is written.
BATTERY = settings(
    max_examples=60, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
N = 4  # slots of the vector env under test


# ------------------------------------------------------------------ the check every case goes through
def describe(value: Any) -> str:
    """A stable description of a case (dtype, shape and requires_grad included), to count distinct cases."""
    if isinstance(value, torch.Tensor):
        return f"tensor({value.dtype}, grad={value.requires_grad}, {value.detach().tolist()!r})"
    if isinstance(value, np.ndarray):
        return f"ndarray({value.dtype}, {value.shape}, {value.tolist()!r})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key!r}: {describe(item)}" for key, item in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return type(value).__name__ + "[" + ", ".join(map(describe, value)) + "]"
    return f"{type(value).__name__}:" + re.sub(r" at 0x[0-9a-f]+", "", repr(value))


def refused(
    cases: set[str], case: str, call: Callable[[], Any], *names: str | tuple[str, ...], allowed: tuple = (ValueError,)
) -> BaseException:
    """Run ``call``: it must raise exactly one of ``allowed`` (not a subclass: no error from deep inside numpy or
    torch), with a message containing each of ``names`` (a tuple: any one of its alternatives)."""
    cases.add(case)
    try:
        call()
    except Exception as error:
        assert type(error) in allowed, f"{case}: {type(error).__module__}.{type(error).__name__}: {error}"
        for name in names:
            alternatives = name if isinstance(name, tuple) else (name,)
            assert any(alternative in str(error) for alternative in alternatives), f"{case}: {error} names no {name}"
        return error
    raise AssertionError(f"{case}: accepted, but it should have been refused")


# ------------------------------------------------------------------ strategies: values no parameter should take
NAN_INF = st.sampled_from([float("nan"), float("inf"), float("-inf")])
COMPLEX = st.complex_numbers(max_magnitude=10, allow_nan=False, allow_infinity=False)
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=4),
    st.binary(max_size=4),
    COMPLEX,
    st.builds(object),
    st.just(Ellipsis),
    st.dictionaries(st.text(max_size=2), st.integers(-3, 3), max_size=2),
    st.sets(st.integers(-3, 3), max_size=2),
)


# Values that torch's weights-only loader reads back, for damaged checkpoint entries (anything else is "foreign").
LOADABLE_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=4),
    st.floats(),
    st.lists(st.integers(-3, 3), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(-3, 3), max_size=2),
)


def nested(flat: list, shape: tuple[int, ...]) -> Any:
    """``flat`` as nested Python lists of ``shape``."""
    if len(shape) <= 1:
        return list(flat)
    step = len(flat) // shape[0]
    return [nested(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def poisoned_list(shape: tuple[int, ...], integer: bool) -> st.SearchStrategy:
    """Nested lists of the right shape with one element that is no number of the kind (or makes them ragged)."""
    size = int(np.prod(shape))
    number = st.integers(-3, 3) if integer else st.floats(-2, 2)
    poison = st.one_of(st.booleans(), COMPLEX, st.text(max_size=2), st.none(), st.lists(number, min_size=2, max_size=3))
    if integer:
        poison = st.one_of(poison, st.floats(-2, 2))

    def build(args: tuple) -> Any:
        flat, where, bad = args
        flat[where] = bad
        return nested(flat, shape)

    return st.tuples(st.lists(number, min_size=size, max_size=size), st.integers(0, size - 1), poison).map(build)


def with_bad_element(array: np.ndarray, where: int, value: float) -> np.ndarray:
    array = array.copy()
    array.reshape(-1)[where] = value
    return array


def as_tensor(array: np.ndarray, requires_grad: bool) -> torch.Tensor:
    tensor = torch.from_numpy(array.copy())
    return tensor.requires_grad_(requires_grad and tensor.is_floating_point())


def bad_numbers(shape: tuple[int, ...], integer: bool = False) -> st.SearchStrategy:
    """Values that a parameter of ``shape`` real numbers (or integers) must refuse: junk, refused dtypes (bool,
    complex, strings, objects; floats for integers), wrong shapes, NaN/inf or values beyond float32, poisoned lists;
    as numpy arrays, torch tensors (with and without requires_grad) and Python lists."""
    size = int(np.prod(shape))
    refused_dtypes = [np.bool_, np.complex64, np.complex128, np.dtype("U2")] + ([np.float32] if integer else [])
    objects = hnp.arrays(np.dtype(object), shape, elements=st.one_of(st.floats(-1, 1), st.none(), st.text(max_size=1)))
    wrong_dtype = st.one_of(st.sampled_from(refused_dtypes).flatmap(lambda dtype: hnp.arrays(dtype, shape)), objects)
    numbers = (
        hnp.arrays(np.int64, shape, elements=st.integers(-3, 3))
        if integer
        else hnp.arrays(
            st.sampled_from([np.float16, np.float32, np.float64]), shape, elements=st.floats(-2, 2, width=16)
        )
    )
    wrong_shape = hnp.arrays(
        np.int64 if integer else np.float32,
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5).filter(lambda s: s != shape),
        elements=st.integers(-3, 3) if integer else st.floats(-1, 1, width=32),
    )
    arrays = [wrong_dtype, wrong_shape]
    if not integer:
        non_finite = st.builds(with_bad_element, numbers, st.integers(0, size - 1), NAN_INF)
        too_large = st.builds(
            with_bad_element,
            numbers.map(lambda a: a.astype(np.float64)),
            st.integers(0, size - 1),
            st.floats(1e39, 1e300) | st.floats(-1e300, -1e39),
        )
        arrays += [non_finite, too_large]
    array = st.one_of(*arrays)
    tensor = st.builds(as_tensor, array.filter(lambda a: a.dtype.kind in "biufc"), st.booleans())
    return st.one_of(JUNK, array, tensor, poisoned_list(shape, integer))


# ------------------------------------------------------------------ envs under test (module-wide, reset once)
@pytest.fixture(scope="module")
def single(tiny_digits: DigitSet) -> GlimpseMNISTEnv:
    env = GlimpseMNISTEnv(digits=tiny_digits, size=60, scales=2, glimpse_size=8, clutter=2, n_glimpses=6)
    env.reset(seed=0)
    return env


@pytest.fixture(scope="module")
def batched(tiny_digits: DigitSet) -> GlimpseMNISTVectorEnv:
    env = GlimpseMNISTVectorEnv(N, digits=tiny_digits, size=60, scales=2, glimpse_size=8, clutter=2, n_glimpses=6)
    env.reset(seed=0)
    return env


def single_action() -> dict[str, np.ndarray]:
    return {"location": np.zeros(2, np.float32), "prediction": np.zeros(10, np.float32)}


def batched_action() -> dict[str, torch.Tensor]:
    return {"location": torch.zeros(N, 2), "prediction": torch.zeros(N, 10)}


def state_of(env: GlimpseMNISTEnv | GlimpseMNISTVectorEnv) -> tuple:
    """What a refused call must leave as it was: progress, indices, locations, canvases, random state."""
    batch = env._batch if isinstance(env, GlimpseMNISTEnv) else env
    return (
        batch.elapsed_glimpses,
        batch.indices.clone(),
        batch.locations.clone(),
        batch.canvases.clone(),
        batch._generator.get_state(),
    )


def same_state(first: tuple, second: tuple) -> bool:
    return first[0] == second[0] and all(torch.equal(a, b) for a, b in zip(first[1:], second[1:], strict=True))


def bad_action(shapes: dict[str, tuple[int, ...]], good: Callable[[], dict]) -> st.SearchStrategy:
    """(action, the names its error must contain): one bad entry, wrong or extra keys, or no dict at all."""
    one_bad_entry = st.sampled_from(sorted(shapes)).flatmap(
        lambda key: bad_numbers(shapes[key]).map(lambda value: ({**good(), key: value}, (key, f"['{key}']")))
    )
    key_names = st.sampled_from(["location", "prediction", "loc", "Location", "extra", "predictions"])
    wrong_keys = (
        st.sets(key_names, max_size=4)
        .filter(lambda keys: keys != set(shapes))
        .map(lambda keys: ({key: good().get(key, 0.0) for key in keys}, ("action",)))
    )
    extra_key = st.builds(
        lambda extra, value: ({**good(), extra: value}, ("action",)),
        st.text(max_size=3).filter(lambda t: t not in shapes),
        JUNK,
    )
    no_dict = st.one_of(
        JUNK.filter(lambda v: not isinstance(v, dict)),
        hnp.arrays(np.float32, 12),
        st.lists(st.floats(-1, 1), max_size=12),
    ).map(lambda value: (value, ("action",)))
    return st.one_of(one_bad_entry, wrong_keys, extra_key, no_dict)


# ------------------------------------------------------------------ actions
@BATTERY
@given(case=bad_action({"location": (2,), "prediction": (10,)}, single_action))
def test_single_env_refuses_every_bad_action(single: GlimpseMNISTEnv, battery_cases: set[str], case: tuple) -> None:
    action, names = case
    before = state_of(single)
    refused(battery_cases, f"single step {describe(action)}", lambda: single.step(action), *names)
    assert same_state(state_of(single), before)


@BATTERY
@given(case=bad_action({"location": (N, 2), "prediction": (N, 10)}, batched_action))
def test_vector_env_refuses_every_bad_action(
    batched: GlimpseMNISTVectorEnv, battery_cases: set[str], case: tuple
) -> None:
    action, names = case
    before = state_of(batched)
    refused(battery_cases, f"vector step {describe(action)}", lambda: batched.step(action), *names)
    assert same_state(state_of(batched), before)


FORMS: dict[str, Callable[[np.ndarray], Any]] = {
    "list": lambda a: a.tolist(),
    "tuple": lambda a: tuple(map(tuple, a)) if a.ndim == 2 else tuple(a.tolist()),
    "float64 array": lambda a: a.astype(np.float64),
    "float16 array": lambda a: a.astype(np.float16),
    "int array": lambda a: np.round(a).astype(np.int32),
    "float32 tensor": lambda a: torch.from_numpy(a.copy()),
    "tensor that requires grad": lambda a: torch.from_numpy(a.copy()).requires_grad_(True),
    "float64 tensor that requires grad": lambda a: torch.from_numpy(a.astype(np.float64)).requires_grad_(True),
    "bfloat16 tensor": lambda a: torch.from_numpy(a.copy()).to(torch.bfloat16),
    "non-contiguous tensor": lambda a: torch.from_numpy(np.ascontiguousarray(a.T)).T if a.ndim == 2 else a,
}


def as_float32(value: Any) -> np.ndarray:
    """What a form means: its numbers in float32."""
    if isinstance(value, torch.Tensor):
        return value.detach().float().numpy()
    return np.asarray(value).astype(np.float32)


@settings(BATTERY, max_examples=30)
@given(
    location=hnp.arrays(np.float32, 2, elements=st.floats(-1.5, 1.5, width=32)),
    prediction=hnp.arrays(np.float32, 10, elements=st.floats(-5, 5, width=32)),
    form=st.sampled_from(sorted(FORMS)),
)
def test_numbers_in_any_form_are_accepted_alike_by_both_envs(
    tiny_digits: DigitSet, location: np.ndarray, prediction: np.ndarray, form: str
) -> None:
    """Arrays of any real dtype, lists, tensors (a tensor that requires grad is read, detached): each gives what
    its float32 numbers give, in the single env and in the vector env alike."""
    convert = FORMS[form]
    kwargs = {"digits": tiny_digits, "size": 60, "scales": 2, "glimpse_size": 8, "n_glimpses": 3}
    single, reference = GlimpseMNISTEnv(**kwargs), GlimpseMNISTEnv(**kwargs)
    batched = GlimpseMNISTVectorEnv(3, **kwargs)
    single.reset(seed=1)
    reference.reset(seed=1)
    batched.reset(seed=1, options={"indices": [7, 7, 7]})
    action = {"location": convert(location), "prediction": convert(prediction)}
    meant = {key: as_float32(value) for key, value in action.items()}
    observation = single.step(action)[0]
    np.testing.assert_array_equal(observation["location"], np.clip(meant["location"], -1, 1))
    np.testing.assert_array_equal(observation["glimpse"], reference.step(meant)[0]["glimpse"])
    np.testing.assert_array_equal(single.prediction, meant["prediction"])

    stacked = {
        key: convert(np.stack([value] * 3)) for key, value in {"location": location, "prediction": prediction}.items()
    }
    observation = batched.step(stacked)[0]
    assert not observation["location"].requires_grad and not observation["glimpse"].requires_grad
    torch.testing.assert_close(
        observation["location"], torch.from_numpy(np.clip(meant["location"], -1, 1)).expand(3, 2), rtol=0, atol=0
    )


def test_a_requires_grad_tensor_is_detached_not_an_error(tiny_digits: DigitSet) -> None:
    """The issue's case: torch's "Can't call numpy()" in the single env, while the vector env kept the graph."""
    location = torch.tensor([0.25, -0.5], requires_grad=True)
    scores = (torch.arange(10.0) * location.sum()).requires_grad_(True)
    single = GlimpseMNISTEnv(digits=tiny_digits)
    single.reset(seed=0)
    observation, *_ = single.step({"location": location * 1.0, "prediction": scores})
    np.testing.assert_array_equal(observation["location"], [0.25, -0.5])
    batched = GlimpseMNISTVectorEnv(2, digits=tiny_digits)
    batched.reset(seed=0)
    observation, *_ = batched.step({"location": (location * 1.0).expand(2, 2), "prediction": scores.expand(2, 10)})
    assert torch.equal(observation["location"], torch.tensor([[0.25, -0.5]] * 2))
    assert observation["location"].grad_fn is None and batched.locations.grad_fn is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch sees none)")
@pytest.mark.parametrize(("env_device", "action_device"), [("cpu", "cuda"), ("cuda", "cpu")])
def test_actions_and_options_on_another_device_are_moved(tiny_digits: DigitSet, env_device: str, action_device: str):
    env = GlimpseMNISTVectorEnv(2, env_device, digits=tiny_digits)
    options = {
        "indices": torch.tensor([3, 4], device=action_device),
        "location": torch.zeros(2, 2, device=action_device),
    }
    observation, _ = env.reset(seed=0, options=options)
    location = torch.full((2, 2), 0.5, device=action_device, requires_grad=True)
    observation, *_ = env.step({"location": location, "prediction": torch.zeros(2, 10, device=action_device)})
    assert observation["location"].device.type == env_device and not observation["location"].requires_grad
    single = GlimpseMNISTEnv(digits=tiny_digits)
    single.reset(seed=0)
    single.step({"location": location[0], "prediction": torch.zeros(10, device=action_device)})


# ------------------------------------------------------------------ constructor arguments
def bad_int(minimum: int, loadable: bool = False) -> st.SearchStrategy:
    """No integer >= ``minimum``; ``loadable``: only values a checkpoint can hold."""
    plain = [
        st.integers(max_value=minimum - 1),
        st.integers(minimum, 200).map(float),
        st.floats(allow_nan=True, allow_infinity=True),
        st.lists(st.integers(minimum, 50), min_size=1, max_size=2),
        LOADABLE_JUNK,
    ]
    if loadable:
        return st.one_of(*plain)
    objects = [
        st.floats(-100, 100).map(np.float64),
        st.fractions(),
        st.integers(minimum, 50).map(lambda i: np.array([i])),
    ]
    return st.one_of(*plain, *objects, JUNK)


def bad_choice(choices: tuple, loadable: bool = False) -> st.SearchStrategy:
    """No string of ``choices``; ``loadable``: only values a checkpoint can hold."""
    named = [c for c in choices if c]
    plain = [
        st.text(max_size=12).filter(lambda text: text not in choices),
        st.sampled_from(named).map(str.upper),
        st.sampled_from(named).map(lambda c: [c]),
        (LOADABLE_JUNK if loadable else JUNK).filter(lambda value: value is not None or None not in choices),
    ]
    return st.one_of(*plain) if loadable else st.one_of(*plain, st.sampled_from(named).map(lambda c: np.array([c])))


VALID_DEVICE = re.compile(r"(cpu|cuda|auto)(:\d+)?")
COMMON = {
    "size": bad_int(28),
    "scales": st.one_of(bad_int(1), st.integers(4, 10**30)),  # 8 * 2**3 pixels > twice a 28-pixel canvas
    "glimpse_size": st.one_of(bad_int(1), st.integers(29, 10**6)),  # larger than the canvas
    "n_glimpses": bad_int(1),
    "clutter": bad_int(0),
    "split": bad_choice(("train", "validation", "test")),
    "reward": bad_choice(("sparse", "dense")),
    "first_location": bad_choice(("random", "center")),
    "data_dir": st.one_of(
        st.integers(),
        st.floats(),
        st.booleans(),
        st.binary(min_size=1, max_size=4),
        st.lists(st.text(max_size=3), max_size=2),
        st.builds(object),
        st.dictionaries(st.text(), st.text()),
    ),
    "digits": st.one_of(
        JUNK.filter(lambda value: value is not None),
        st.builds(lambda: torch.zeros(3, 28, 28)),
        st.builds(lambda: {"images": torch.zeros(3, 28, 28)}),
    ),
}
SINGLE_ONLY = {"render_mode": bad_choice((None, "rgb_array", "human"))}
VECTOR_ONLY = {
    "num_envs": bad_int(1),
    "render_mode": JUNK.filter(lambda value: value is not None) | st.sampled_from(["rgb_array", "human"]),
    "device": st.one_of(
        st.text(max_size=8).filter(lambda text: not VALID_DEVICE.fullmatch(text)),
        st.sampled_from(["meta", "mps", "cuda:99", "CPU", "cpu:-1", "gpu", ""]),
        st.none(),
        st.booleans(),
        st.floats(),
        st.lists(st.just("cpu"), min_size=1, max_size=2),
        st.builds(object),
    ),
}


def argument(parameters: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    return st.sampled_from(sorted(parameters)).flatmap(lambda name: parameters[name].map(lambda v: (name, v)))


@BATTERY
@given(case=argument({**COMMON, **SINGLE_ONLY}))
def test_single_env_refuses_every_bad_argument(tiny_digits: DigitSet, battery_cases: set[str], case: tuple) -> None:
    name, value = case
    kwargs = {"digits": tiny_digits, name: value}
    refused(battery_cases, f"single env {name}={describe(value)}", lambda: GlimpseMNISTEnv(**kwargs), name)


@BATTERY
@given(case=argument({**COMMON, **VECTOR_ONLY}))
def test_vector_env_refuses_every_bad_argument(tiny_digits: DigitSet, battery_cases: set[str], case: tuple) -> None:
    name, value = case
    kwargs = {"num_envs": 2, "digits": tiny_digits, name: value}
    refused(battery_cases, f"vector env {name}={describe(value)}", lambda: GlimpseMNISTVectorEnv(**kwargs), name)


def test_data_dir_of_a_wrong_type_names_data_dir(tiny_digits: DigitSet) -> None:
    """The issue's case: ``data_dir=123`` was a bare TypeError from pathlib."""
    for build in (lambda: GlimpseMNISTEnv(data_dir=123), lambda: load_digits("test", data_dir=123)):
        with pytest.raises(ValueError, match="data_dir must be None or a folder path"):
            build()


@BATTERY
@given(
    case=argument(
        {
            "split": bad_choice(("train", "validation", "test")),
            "data_dir": COMMON["data_dir"],
            "device": VECTOR_ONLY["device"],
        }
    )
)
def test_load_digits_refuses_every_bad_argument(battery_cases: set[str], case: tuple) -> None:
    """Checked before any folder is read or a download started."""
    name, value = case
    kwargs = {"split": "test", **{name: value}}
    refused(battery_cases, f"load_digits {name}={describe(value)}", lambda: load_digits(**kwargs), name)


def good_digits(count: int = 3) -> dict[str, torch.Tensor]:
    return {"images": torch.zeros(count, 28, 28, dtype=torch.uint8), "labels": torch.arange(count)}


DIGIT_SETS = {
    "images": st.one_of(
        JUNK,
        st.builds(lambda: np.zeros((3, 28, 28), np.uint8)),
        st.sampled_from([torch.float32, torch.int64, torch.bool]).map(
            lambda dtype: torch.zeros(3, 28, 28, dtype=dtype)
        ),
        hnp.array_shapes(min_dims=0, max_dims=4, max_side=30)
        .filter(lambda s: s[1:] != (28, 28) or len(s) != 3)
        .map(lambda shape: torch.zeros(shape, dtype=torch.uint8)),
    ),
    "labels": st.one_of(
        JUNK,
        st.builds(lambda: np.arange(3)),
        st.sampled_from([torch.float32, torch.bool, torch.complex64]).map(lambda dtype: torch.zeros(3, dtype=dtype)),
        hnp.arrays(np.int64, 3, elements=st.integers(-(10**6), 10**6))
        .filter(lambda a: a.min() < 0 or a.max() > 9)
        .map(torch.from_numpy),
        st.integers(0, 5).filter(lambda n: n != 3).map(lambda n: torch.zeros(n, dtype=torch.int64)),
    ),
}


@BATTERY
@given(case=argument(DIGIT_SETS))
def test_digit_sets_refuse_bad_tensors(battery_cases: set[str], case: tuple) -> None:
    name, value = case
    kwargs = {**good_digits(), name: value}
    refused(battery_cases, f"DigitSet {name}={describe(value)}", lambda: DigitSet(**kwargs), name)


@BATTERY
@given(
    case=st.one_of(
        bad_numbers((12,)).map(lambda value: ("action", value)),
        st.one_of(st.floats(max_value=0), NAN_INF, JUNK, st.just(np.array([1.0, 2.0]))).map(
            lambda value: ("score_bound", value)
        ),
    )
)
def test_flatten_action_refuses_bad_actions_and_bounds(
    tiny_digits: DigitSet, battery_cases: set[str], case: tuple
) -> None:
    name, value = case
    env = FlattenAction(GlimpseMNISTEnv(digits=tiny_digits))
    if name == "score_bound":
        refused(battery_cases, f"FlattenAction score_bound={describe(value)}", lambda: FlattenAction(env, value), name)
    else:
        env.reset(seed=0)
        refused(battery_cases, f"FlattenAction step {describe(value)}", lambda: env.step(value), name)


# ------------------------------------------------------------------ reset options and seeds
BAD_SEEDS = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=2**64),
    st.floats(),
    st.floats(0, 100).map(np.float64),
    JUNK.filter(lambda value: value is not None),
)
NOT_A_DICT = st.one_of(
    st.text(),
    st.lists(st.integers(), max_size=2),
    st.tuples(st.integers()),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.builds(object),
    st.binary(max_size=3),
)


def unknown_keys(allowed: set[str]) -> st.SearchStrategy:
    keys = st.one_of(st.text(max_size=8), st.integers(), st.tuples(st.integers())).filter(lambda k: k not in allowed)
    return st.dictionaries(keys, st.integers(0, 3), min_size=1, max_size=3)


def options_cases(entries: dict[str, st.SearchStrategy], allowed: set[str]) -> st.SearchStrategy:
    """(reset options, the names the error must contain)."""
    one_bad_entry = st.sampled_from(sorted(entries)).flatmap(
        lambda key: entries[key].map(lambda value: ({key: value}, (f"options['{key}']",)))
    )
    return st.one_of(
        NOT_A_DICT.map(lambda value: (value, ("options",))),
        unknown_keys(allowed).map(lambda value: (value, ("options",))),
        one_bad_entry,
    )


SINGLE_OPTIONS = {
    "index": st.one_of(
        st.integers(max_value=-1),
        st.integers(min_value=300),
        st.integers(300, 10**6).map(np.int64),
        bad_int(0).filter(lambda v: not isinstance(v, int)),
    ),
    "location": bad_numbers((2,)),
}
VECTOR_OPTIONS = {
    "indices": st.one_of(
        bad_numbers((N,), integer=True),
        hnp.arrays(np.int64, N, elements=st.integers(-(10**12), 10**12)).filter(lambda a: a.min() < 0 or a.max() > 299),
    ),
    "location": bad_numbers((N, 2)),
    "slots_per_canvas": st.one_of(bad_int(1), st.integers(min_value=N + 1), st.just(3)),  # 3 does not divide 4
}


@BATTERY
@given(case=options_cases(SINGLE_OPTIONS, {"index", "location"}), seed=st.none() | st.integers(0, 2**64 - 1))
def test_single_env_refuses_every_bad_reset(
    single: GlimpseMNISTEnv, battery_cases: set[str], case: tuple, seed: int | None
) -> None:
    options, names = case
    before = state_of(single)
    refused(
        battery_cases, f"single reset {describe(options)}", lambda: single.reset(seed=seed, options=options), *names
    )
    assert same_state(state_of(single), before)  # not even re-seeded


@BATTERY
@given(case=options_cases(VECTOR_OPTIONS, {"indices", "location", "slots_per_canvas"}))
def test_vector_env_refuses_every_bad_reset(
    batched: GlimpseMNISTVectorEnv, battery_cases: set[str], case: tuple
) -> None:
    options, names = case
    before = state_of(batched)
    refused(battery_cases, f"vector reset {describe(options)}", lambda: batched.reset(seed=3, options=options), *names)
    assert same_state(state_of(batched), before)


@settings(BATTERY, max_examples=25)
@given(seed=BAD_SEEDS)
def test_both_envs_refuse_every_bad_seed(
    single: GlimpseMNISTEnv, batched: GlimpseMNISTVectorEnv, battery_cases: set[str], seed: Any
) -> None:
    for env in (single, batched):
        before = state_of(env)
        refused(
            battery_cases, f"{type(env).__name__} seed={describe(seed)}", lambda env=env: env.reset(seed=seed), "seed"
        )
        assert same_state(state_of(env), before)


@settings(BATTERY, max_examples=15)
@given(indices=hnp.arrays(np.int64, N, elements=st.integers(0, 299)).filter(lambda a: a[0] != a[1] or a[2] != a[3]))
def test_indices_must_repeat_over_the_slots_of_a_canvas(
    batched: GlimpseMNISTVectorEnv, battery_cases: set[str], indices: np.ndarray
) -> None:
    options = {"indices": indices, "slots_per_canvas": 2}
    refused(
        battery_cases,
        f"vector reset {describe(options)}",
        lambda: batched.reset(options=options),
        "options['indices']",
        "slots_per_canvas",
    )


def test_the_issues_reset_cases(single: GlimpseMNISTEnv, batched: GlimpseMNISTVectorEnv) -> None:
    with pytest.raises(ValueError, match="reset options must be None or a dict") as raised:
        single.reset(options="index")
    assert "'i', 'n'" not in str(raised.value)  # no longer a list of the string's letters
    with pytest.raises(ValueError, match=r"options\['location'\] must be real numbers"):
        single.reset(options={"location": "centre"})  # was numpy's "could not convert string to float"
    with pytest.raises(ValueError, match=r"options\['location'\] must be real numbers"):
        batched.reset(options={"location": torch.ones(N, 2, dtype=torch.complex64)})  # lost its imaginary part
    with pytest.raises(ValueError, match=r"options\['index'\] must be an integer"):
        single.reset(options={"index": True})


# ------------------------------------------------------------------ checkpoints
class Foreign:
    """Not a tensor, not a plain container: torch's weights-only loader refuses to unpickle it."""


class Saved(NamedTuple):
    content: bytes
    payload: dict[str, Any]

    def __repr__(self) -> str:  # hypothesis prints its arguments with a failure
        return f"<a checkpoint of {len(self.content)} bytes>"


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Saved:
    """A small checkpoint's bytes and payload."""
    torch.manual_seed(0)
    config = RAMConfig(what_hidden=8, where_hidden=8, glimpse_out=16, core_size=16, learn_first_location=True)
    path = tmp_path_factory.mktemp("checkpoint") / "agent.pt"
    env_kwargs = {"size": 28, "scales": 1, "glimpse_size": 8, "n_glimpses": 3, "clutter": 0, "first_location": "random"}
    save_agent(path, RecurrentAttentionModel(config), env_kwargs, {"note": "x"})
    return Saved(path.read_bytes(), torch.load(path, weights_only=True))


def saved_bytes(payload: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def payload_damage(payload: dict[str, Any]) -> st.SearchStrategy:
    """(damaged payload, the names its error must contain besides the file's path, a description of the damage)."""
    config, weights = payload["model_config"], payload["model"]

    def edit(key: str, inner: str | None, value: Any, drop: bool = False) -> tuple[dict[str, Any], str]:
        damaged = {**payload, key: dict(payload[key])} if inner is not None else dict(payload)
        target = damaged[key] if inner is not None else damaged
        where = key if inner is None else f"{key}[{inner!r}]"
        if drop:
            del target[inner if inner is not None else key]
            return damaged, f"without {where}"
        target[inner if inner is not None else key] = value
        return damaged, f"{where} = {describe(value)}"

    def case(edited: tuple[dict[str, Any], str], names: tuple) -> tuple[dict[str, Any], tuple, str]:
        return edited[0], names, edited[1]

    def bad_config_value(name: str) -> st.SearchStrategy:
        value = config[name]
        if isinstance(value, bool):
            return LOADABLE_JUNK.filter(lambda v: not isinstance(v, bool))
        if isinstance(value, int):
            return st.one_of(st.integers(-5, 300).filter(lambda v: v != value), st.floats(1, 64), LOADABLE_JUNK)
        if isinstance(value, float):  # loc_std
            return st.one_of(st.floats(max_value=0), st.just(float("nan")), st.text(max_size=2), st.none())
        return st.one_of(st.text(max_size=5).filter(lambda v: v not in ("rnn", "lstm")), LOADABLE_JUNK)

    def bad_weight(name: str) -> st.SearchStrategy:
        shape = tuple(weights[name].shape)
        return st.one_of(
            hnp.array_shapes(min_dims=0, max_dims=3, max_side=20).filter(lambda s: s != shape).map(torch.zeros),
            st.tuples(st.integers(0, max(0, weights[name].numel() - 1)), NAN_INF).map(
                lambda args: weights[name].flatten().index_fill(0, torch.tensor([args[0]]), args[1]).view(shape)
            ),
            st.just(torch.zeros(shape, dtype=torch.int64)),
            st.one_of(st.integers(), st.text(max_size=3), st.none(), st.lists(st.floats(), max_size=3)),
        )

    config_cases = st.sampled_from(sorted(config)).flatmap(
        lambda name: bad_config_value(name).map(
            lambda v: case(edit("model_config", name, v), ((name, "model_config"),))
        )
    )
    env_values = {
        "size": bad_int(28, loadable=True),
        "scales": st.integers(2, 3),  # valid for the env, but not the model's
        "glimpse_size": st.integers(2, 7),  # likewise
        "n_glimpses": bad_int(1, loadable=True),
        "clutter": bad_int(0, loadable=True),
        "first_location": bad_choice(("random", "center"), loadable=True),
        "reward": bad_choice(("sparse", "dense"), loadable=True),
    }
    env_cases = st.sampled_from(sorted(env_values)).flatmap(
        lambda name: env_values[name].map(lambda v: case(edit("env_kwargs", name, v), (name,)))
    )
    unknown = st.sampled_from(["model_config", "env_kwargs", "model"]).flatmap(
        lambda key: st.sampled_from(["split", "gru_size", "version", "weird.weight"]).map(
            lambda name: case(edit(key, name, torch.zeros(1) if key == "model" else 1), (name,))
        )
    )
    weight_cases = st.sampled_from(sorted(weights)).flatmap(
        lambda name: st.one_of(
            st.just(case(edit("model", name, None, drop=True), (name,))),
            bad_weight(name).map(lambda v: case(edit("model", name, v), (name,))),
        )
    )
    missing = st.sampled_from(["format", "model", "model_config", "env_kwargs"]).map(
        lambda key: case(edit(key, None, None, drop=True), (key,))
    )
    not_dicts = st.sampled_from(["model", "model_config", "env_kwargs", "extra"]).flatmap(
        lambda key: st.one_of(st.lists(st.integers(), max_size=2), st.integers(), st.text(max_size=3), st.none()).map(
            lambda v: case(edit(key, None, v), (key,))
        )
    )
    other_format = st.one_of(
        st.text(max_size=20).filter(lambda v: v != FORMAT),
        st.integers(),
        st.none(),
        st.just(torch.zeros(3)),
        st.just("glimpse-mnist-ram/2"),
    ).map(lambda v: case(edit("format", None, v), ("format",)))
    foreign = st.one_of(
        st.lists(st.integers(), max_size=3),
        st.integers(),
        st.text(max_size=5),
        st.just(torch.zeros(2)),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    ).map(lambda v: (v, ("not a glimpse-mnist RAM checkpoint",), f"payload {describe(v)}"))
    return st.one_of(config_cases, env_cases, unknown, weight_cases, missing, not_dicts, other_format, foreign)


def file_damage(original: bytes) -> st.SearchStrategy:
    """(damaged bytes, the names its error must contain besides the file's path), from the file itself."""
    size = len(original)

    def rezipped(junk: bytes) -> bytes:
        """The archive rewritten with ``junk`` as its pickle: intact zip, CRCs right, contents damaged."""
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(original)) as source, zipfile.ZipFile(out, "w") as target:
            for info in source.infolist():
                target.writestr(info.filename, junk if info.filename.endswith("data.pkl") else source.read(info))
        return out.getvalue()

    return st.one_of(
        st.integers(0, size - 1).map(lambda n: (original[:n], ("truncated",))),
        st.binary(max_size=4096).map(lambda junk: (junk, ("not a torch checkpoint",))),
        st.binary(max_size=64).map(lambda junk: (rezipped(junk), ("damaged",))),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=3).map(
            lambda value: (pickle.dumps(value), ("not a torch checkpoint",))
        ),
        st.just((saved_bytes({"format": FORMAT, "model": Foreign()}), ("only tensors and plain containers",))),
    )


def check_refused_file(cases: set[str], case: str, content: bytes, names: tuple) -> None:
    """``load_agent`` and ``read_checkpoint`` of a file of ``content`` refuse it, naming it; it stays as it was."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "damaged.pt"
        path.write_bytes(content)
        for load in (load_agent, read_checkpoint):
            refused(cases, f"{load.__name__} {case}", lambda load=load: load(path), str(path), *names)
        assert path.read_bytes() == content  # never modified
        assert os.listdir(folder) == ["damaged.pt"]  # nor anything written beside it


@settings(BATTERY, max_examples=120)
@given(data=st.data())
def test_every_damaged_payload_is_refused_naming_the_file(
    saved: Saved, battery_cases: set[str], data: st.DataObject
) -> None:
    payload, names, description = data.draw(payload_damage(saved[1]))
    check_refused_file(battery_cases, description, saved_bytes(payload), names)


@settings(BATTERY, max_examples=60)
@given(data=st.data())
def test_every_damaged_file_is_refused_naming_the_file(
    saved: Saved, battery_cases: set[str], data: st.DataObject
) -> None:
    content, names = data.draw(file_damage(saved[0]))
    check_refused_file(battery_cases, f"file {hashlib.md5(content).hexdigest()}", content, names)


def flipped(content: bytes, flips: list[tuple[int, int]]) -> bytes:
    damaged = bytearray(content)
    for where, mask in flips:
        damaged[where % len(damaged)] ^= mask
    return bytes(damaged)


@settings(BATTERY, max_examples=50)
@given(
    damage=st.one_of(
        st.lists(st.tuples(st.integers(0, 10**9), st.integers(1, 255)), min_size=1, max_size=3).map(
            lambda flips: lambda content: flipped(content, flips)
        ),
        st.tuples(st.integers(0, 10**9), st.binary(min_size=1, max_size=64)).map(  # the end overwritten
            lambda args: lambda content: content[: args[0] % len(content)] + args[1]
        ),
    )
)
def test_flipped_or_overwritten_bytes_are_refused_or_harmless(
    saved: Saved, battery_cases: set[str], damage: Callable[[bytes], bytes]
) -> None:
    """A flipped or overwritten byte anywhere is refused (the zip's structure and CRCs), unless it changed nothing
    the loader reads (then the very same weights load)."""
    content = damage(saved.content)
    battery_cases.add(f"damaged file {hashlib.md5(content).hexdigest()}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "damaged.pt"
        path.write_bytes(content)
        try:
            model = load_agent(path).model
        except ValueError as error:
            assert type(error) is ValueError and str(path) in str(error)
        else:
            for name, value in model.state_dict().items():
                assert torch.equal(value, saved.payload["model"][name])
        assert path.read_bytes() == content


def test_missing_checkpoint_and_a_path_of_a_wrong_type(tmp_path: Path, battery_cases: set[str]) -> None:
    missing = tmp_path / "missing.pt"
    refused(
        battery_cases, "missing checkpoint", lambda: load_agent(missing), str(missing), allowed=(FileNotFoundError,)
    )
    refused(battery_cases, "checkpoint path=123", lambda: load_agent(123), "path")
    refused(battery_cases, "checkpoint device='gpu'", lambda: load_agent(missing, device="gpu"), "device")


def test_the_issues_checkpoint_cases(saved: Saved, tmp_path: Path) -> None:
    """NaN weights loaded silently; a wrong shape, a missing model key, an unknown config key were raw torch or
    Python errors without the file's name."""
    payload = saved[1]
    weights = {**payload["model"], "classifier.weight": payload["model"]["classifier.weight"] * float("nan")}
    cases = {
        "nan": ({**payload, "model": weights}, "weight 'classifier.weight' holds NaN"),
        "shape": ({**payload, "model": {**payload["model"], "core.bias_ih": torch.zeros(3)}}, "'core.bias_ih' must be"),
        "no-model": ({key: v for key, v in payload.items() if key != "model"}, "lacks 'model'"),
        "unknown": ({**payload, "model_config": {**payload["model_config"], "dropout": 0.1}}, "unknown keys 'dropout'"),
    }
    for name, (damaged, message) in cases.items():
        path = tmp_path / f"{name}.pt"
        torch.save(damaged, path)
        with pytest.raises(ValueError, match=re.escape(message)) as raised:
            load_agent(path)
        assert str(path) in str(raised.value)


@settings(BATTERY, max_examples=30)
@given(
    case=st.one_of(
        st.sampled_from(["split", "data_dir", "device", "num_envs"]).map(lambda key: ({"size": 28, key: "x"}, key)),
        st.integers(2, 3).map(lambda scales: ({"size": 60, "scales": scales}, "scales")),  # the model has one scale
        bad_int(28, loadable=True).map(lambda size: ({"size": size}, "size")),
    )
)
def test_save_agent_refuses_what_load_agent_would_and_writes_nothing(
    saved: Saved, battery_cases: set[str], case: tuple
) -> None:
    """Nothing lost: a checkpoint that could not be loaded is never written, and the one there stays."""
    env_kwargs, name = case
    model = RecurrentAttentionModel(RAMConfig(**saved.payload["model_config"]))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "agent.pt"
        path.write_bytes(saved.content)
        refused(
            battery_cases,
            f"save_agent env_kwargs={describe(env_kwargs)}",
            lambda: save_agent(path, model, env_kwargs),
            str(path),
            name,
        )
        assert path.read_bytes() == saved.content and os.listdir(folder) == ["agent.pt"]


# ------------------------------------------------------------------ damaged MNIST folders
def idx_files(count: int = 12) -> dict[str, bytes]:
    """Small, valid MNIST-format ``.gz`` files under the original names (``count`` digits in each split)."""
    rng = np.random.default_rng(0)
    images = struct.pack(">IIII", 2051, count, 28, 28) + rng.integers(0, 256, count * 784, dtype=np.uint8).tobytes()
    labels = struct.pack(">II", 2049, count) + bytes(i % 10 for i in range(count))
    return {name: gzip.compress(images if "images" in name else labels, mtime=0) for name in MNIST_MD5}


DAMAGES = (
    "missing",
    "empty",
    "truncated",
    "flipped byte",
    "random bytes",
    "another file's bytes",
    "a folder",
    "a dangling link",
    "appended bytes",
    "not gzip",
    "gzip of other data",
)


def damage_file(folder: Path, name: str, damage: str, where: int, junk: bytes, files: dict[str, bytes]) -> None:
    target = folder / name
    original = target.read_bytes()
    target.unlink()
    if damage == "missing":
        return
    if damage == "a folder":
        target.mkdir()
    elif damage == "a dangling link":
        target.symlink_to(folder / "nowhere.gz")
    else:
        content = {
            "empty": b"",
            "truncated": original[: where % len(original)],
            "flipped byte": bytes(b ^ (0xFF if i == where % len(original) else 0) for i, b in enumerate(original)),
            "random bytes": junk,
            "another file's bytes": next(v for k, v in files.items() if v != original),
            "appended bytes": original + junk,
            "not gzip": gzip.decompress(original),
            "gzip of other data": gzip.compress(junk, mtime=0),
        }[damage]
        target.write_bytes(content)


def snapshot(folder: Path) -> dict[str, tuple]:
    return {
        path.name: (path.is_dir(), path.is_symlink(), None if path.is_dir() or not path.exists() else path.read_bytes())
        for path in sorted(folder.iterdir())
    }


@settings(BATTERY, max_examples=50)
@given(
    name=st.sampled_from(sorted(MNIST_MD5)),
    damage=st.sampled_from(DAMAGES),
    where=st.integers(0, 10**6),
    junk=st.binary(min_size=1, max_size=64),
)
def test_every_damaged_mnist_folder_is_refused_naming_the_file(
    battery_cases: set[str], name: str, damage: str, where: int, junk: bytes
) -> None:
    """Fake MNIST files (their MD5s stand in for the originals'); one is damaged: the folder is refused, naming the
    file, and left as it was. The same folder undamaged loads."""
    files = idx_files()
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        for file_name, content in files.items():
            patch.setitem(MNIST_MD5, file_name, hashlib.md5(content).hexdigest())
        patch.setenv(CACHE_ENV_VAR, str(Path(tmp) / "cache"))
        patch.delenv(ENV_VAR, raising=False)
        good, bad = Path(tmp) / "good", Path(tmp) / "bad"
        for folder in (good, bad):
            folder.mkdir()
            for file_name, content in files.items():
                (folder / file_name).write_bytes(content)
        assert len(load_digits("test", data_dir=good)) == 12  # the fakes are a valid MNIST folder
        cached = sorted((Path(tmp) / "cache").iterdir())

        damage_file(bad, name, damage, where, junk, files)
        before = snapshot(bad)
        allowed = (FileNotFoundError,) if damage in ("missing", "a folder", "a dangling link") else (ValueError,)
        refused(
            battery_cases,
            f"mnist {name} {damage} {hashlib.md5(bytes(str(before), 'utf8')).hexdigest()}",
            lambda: load_digits("test", data_dir=bad),
            name,
            (str(bad), str(bad.resolve())),
            allowed=allowed,
        )
        assert snapshot(bad) == before
        assert sorted((Path(tmp) / "cache").iterdir()) == cached  # nothing parsed from the damaged folder is kept


@settings(BATTERY, max_examples=8)
@given(
    name=st.sampled_from(sorted(MNIST_MD5)),
    damage=st.sampled_from(["truncated", "flipped byte", "missing"]),
    where=st.integers(0, 10**6),
)
def test_damaged_copies_of_the_real_mnist_files_are_refused(
    mnist_dir: Path, battery_cases: set[str], name: str, damage: str, where: int
) -> None:
    """The same with the real files: the damaged one copied into a temporary folder, the others linked; the real
    folder is only read."""
    raw = mnist_dir if (mnist_dir / name).is_file() else mnist_dir / "MNIST" / "raw"
    source = {path.name: (path.stat().st_size, path.stat().st_mtime_ns) for path in raw.iterdir()}
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.setenv(CACHE_ENV_VAR, str(Path(tmp) / "cache"))
        folder = Path(tmp) / "raw"
        folder.mkdir()
        for file_name in MNIST_MD5:
            if file_name != name:
                (folder / file_name).symlink_to(raw / file_name)
        if damage != "missing":
            content = bytearray((raw / name).read_bytes())
            if damage == "truncated":
                content = content[: where % len(content)]
            else:
                content[where % len(content)] ^= 0xFF
            (folder / name).write_bytes(bytes(content))
        allowed = (FileNotFoundError,) if damage == "missing" else (ValueError,)
        refused(
            battery_cases,
            f"real mnist {name} {damage} {where}",
            lambda: load_digits("test", data_dir=folder),
            name,
            allowed=allowed,
        )
    assert {path.name: (path.stat().st_size, path.stat().st_mtime_ns) for path in raw.iterdir()} == source
