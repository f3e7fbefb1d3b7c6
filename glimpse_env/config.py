"""The task's configuration: one frozen dataclass, validated once, shared by the single and the vector env; and
the checks of the other arguments, each one helper.

:class:`GlimpseConfig` is the one home of the env's arguments: their names, defaults, help texts, choices and
checks. Both envs take its fields as keyword arguments, the trainer's :class:`~agents.training.config.TaskConfig`
and the play window's flags are made from its fields, and a checkpoint's ``env_kwargs`` are its
:data:`ENV_ARGUMENTS`: adding an env argument means adding a field here.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from numbers import Integral, Real
from typing import Any

import torch

SPLITS = ("train", "validation", "test")
REWARDS = ("sparse", "dense")
FIRST_LOCATIONS = ("random", "center")
MNIST_SIDE = 28
NUM_CLASSES = 10
# The one bound of every seed (the envs' resets, the trainer's, play's, the figures', the evaluation's): the largest
# that torch.manual_seed and torch.Generator.manual_seed take (numpy's and Gymnasium's seeding take any int >= 0).
MAX_SEED = 2**64 - 1


def _check_int(name: str, value: object, minimum: int, allowed: str, maximum: int | None = None) -> int:
    """``value`` as a Python int, or a ``ValueError`` naming ``name``: booleans and integral floats are refused."""
    if (
        isinstance(value, bool)
        or not isinstance(value, Integral)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        raise ValueError(f"{name} must be an integer {allowed}, got {reprlib.repr(value)}")
    return int(value)


def _check_float(name: str, value: object, low: float, inclusive: bool = True, high: float | None = None) -> float:
    """``value`` as a finite float >= ``low`` (> ``low`` unless ``inclusive``) and < ``high`` (when given), or a
    ``ValueError`` naming ``name``, in the words of :func:`_check_int`: booleans and NaN/inf are refused."""
    sign = ">=" if inclusive else ">"
    allowed = f"{sign} {low:g}" if high is None else f"in {'[' if inclusive else '('}{low:g}, {high:g})"
    if (
        isinstance(value, bool)
        or not isinstance(value, Real)
        or not math.isfinite(value)
        or value < low
        or (value == low and not inclusive)
        or (high is not None and value >= high)
    ):
        raise ValueError(f"{name} must be a finite number {allowed}, got {reprlib.repr(value)}")
    return float(value)


def _check_choice(name: str, value: object, choices: tuple[str | None, ...]) -> None:
    # Only str (or None, where allowed): ``in`` on an array or another object could compare element-wise or raise.
    if not (value is None or isinstance(value, str)) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {reprlib.repr(value)}")


def resolve_device(device: torch.device | str) -> torch.device:
    """``"auto"`` picks CUDA when present; asking for an absent CUDA is a clear error, not a crash later."""
    if isinstance(device, str) and device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    allowed = f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {reprlib.repr(device)}"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as error:
        raise ValueError(allowed) from error
    if device.type not in ("cpu", "cuda"):  # meta, mps...: tensors there would fail later, deep inside an op
        raise ValueError(allowed)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for, but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device={str(device)!r} was asked for, but torch sees {torch.cuda.device_count()} CUDA GPUs")
    return device


def _argument(default: Any, help: str, choices: tuple[str, ...] | None = None, task: bool = True) -> Any:  # noqa: A002
    """A field of :class:`GlimpseConfig`: its default, the help text of its flag, its choices (None: an integer),
    and whether it is part of the task an agent is trained for (:data:`ENV_ARGUMENTS`)."""
    return field(default=default, metadata={"help": help, "choices": choices, "task": task})


@dataclass(frozen=True)
class GlimpseConfig:
    """What an episode of GlimpseMNIST is: canvas, retina, episode length, reward. Each field's help text (its
    ``metadata["help"]``, also its flag's help) says what it is; ``__post_init__`` checks them all, once.

    ``split`` (``"train"``: the first 55,000 training digits; ``"validation"``: the last 5,000; ``"test"``: the
    10,000 test digits) and ``reward`` (``"sparse"``: 1 for a correct final prediction; ``"dense"``: the
    log-probability of the label at every step) are chosen by whoever builds the env; the other fields are the task
    an agent is trained for (:data:`ENV_ARGUMENTS`).
    """

    size: int = _argument(28, "canvas side in pixels (28: MNIST; 60/100: translated or cluttered)")
    scales: int = _argument(1, "retina scales k; scale i covers glimpse_size * 2**i pixels")
    glimpse_size: int = _argument(8, "side g of each g x g retina patch")
    n_glimpses: int = _argument(6, "glimpses per episode (= environment steps per episode)")
    clutter: int = _argument(0, "8x8 distractor crops per canvas")
    # Not the task: which digits, and how an episode is scored, are the caller's (the trainer's reward is sparse).
    split: str = _argument("train", "which digits: train, validation or test", SPLITS, task=False)
    reward: str = _argument("sparse", "sparse (1 for a correct final prediction) or dense", REWARDS, task=False)
    first_location: str = _argument("random", "where the first glimpse goes: random or center", FIRST_LOCATIONS)

    def __post_init__(self) -> None:
        def integer(name: str, minimum: int, allowed: str) -> int:
            value = _check_int(name, getattr(self, name), minimum, allowed)
            object.__setattr__(self, name, value)  # numpy integers are stored as ints (JSON, torch take them)
            return value

        size = integer("size", MNIST_SIDE, f">= {MNIST_SIDE} (the MNIST digit must fit on the canvas)")
        scales = integer("scales", 1, ">= 1")
        glimpse_size = integer("glimpse_size", 1, f">= 1 and <= size ({size})")
        if glimpse_size > size:
            raise ValueError(f"glimpse_size must be an integer >= 1 and <= size ({size}), got {glimpse_size}")
        # The power is capped so that a huge scales fails at once instead of computing 2**(scales - 1).
        cap = (2 * size).bit_length()
        largest = glimpse_size * 2 ** min(scales - 1, cap)
        if largest > 2 * size:
            shown = largest if scales - 1 <= cap else f"more than {largest}"
            raise ValueError(
                f"scales={scales} with glimpse_size={glimpse_size} gives a largest scale of {shown} "
                f"pixels, more than twice the canvas (size={size}), which would see the whole canvas with room "
                f"to spare from anywhere; allowed: glimpse_size * 2**(scales - 1) <= {2 * size}"
            )
        integer("n_glimpses", 1, ">= 1")
        integer("clutter", 0, ">= 0")
        for f in fields(self):
            if f.metadata["choices"] is not None:
                _check_choice(f.name, getattr(self, f.name), f.metadata["choices"])


# The env's arguments that make the task an agent is trained for, in GlimpseConfig's order (every field but the
# split and the reward): a checkpoint's env_kwargs, the trainer's and the play window's env flags. The one list.
ENV_ARGUMENTS: tuple[str, ...] = tuple(f.name for f in fields(GlimpseConfig) if f.metadata["task"])


def env_arguments(values: Mapping[str, Any]) -> dict[str, Any]:
    """The items of ``values`` (a checkpoint's ``env_kwargs``, parsed flags as a dict) that are :data:`ENV_ARGUMENTS`,
    in that order: what ``gym.make("GlimpseMNIST-v0", split=..., **env_arguments(values))`` takes for the task."""
    return {name: values[name] for name in ENV_ARGUMENTS if name in values}
