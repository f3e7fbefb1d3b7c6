"""The task's configuration: one frozen dataclass, validated once, shared by the single and the vector env; and
the checks of the other arguments, each one helper."""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from numbers import Integral
from typing import Any

import torch

SPLITS = ("train", "validation", "test")
REWARDS = ("sparse", "dense")
FIRST_LOCATIONS = ("random", "center")
MNIST_SIDE = 28
NUM_CLASSES = 10


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


@dataclass(frozen=True)
class GlimpseConfig:
    """What an episode of GlimpseMNIST is: canvas, retina, episode length, reward.

    Args:
        size: side of the square canvas in pixels; 28 is plain MNIST, larger sizes translate the digit.
        scales: number of retina scales ``k``; scale ``i`` covers ``glimpse_size * 2**i`` pixels.
        glimpse_size: side ``g`` of each scale's ``g x g`` patch as the agent receives it.
        n_glimpses: glimpses per episode (the first at ``first_location``, then one per step).
        clutter: number of 8x8 distractor crops pasted on each canvas.
        split: ``"train"`` (first 55,000 training digits), ``"validation"`` (last 5,000), ``"test"`` (10,000).
        reward: ``"sparse"`` (1 for a correct final prediction) or ``"dense"`` (log-probability of the label).
        first_location: ``"random"`` (uniform in ``[-1, 1]^2``) or ``"center"``.
    """

    size: int = 28
    scales: int = 1
    glimpse_size: int = 8
    n_glimpses: int = 6
    clutter: int = 0
    split: str = "train"
    reward: str = "sparse"
    first_location: str = "random"

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
        _check_choice("split", self.split, SPLITS)
        _check_choice("reward", self.reward, REWARDS)
        _check_choice("first_location", self.first_location, FIRST_LOCATIONS)


# The env's arguments that make the task an agent is trained for, in GlimpseConfig's order: every field but the
# split (which digits: chosen by whoever builds the env) and the reward (how an episode is scored, not what the
# agent sees). The one list the trainer, the checkpoints' readers, the play window and the figures use.
ENV_ARGUMENTS: tuple[str, ...] = tuple(
    field.name for field in fields(GlimpseConfig) if field.name not in ("split", "reward")
)


def env_arguments(values: Mapping[str, Any]) -> dict[str, Any]:
    """The items of ``values`` (a checkpoint's ``env_kwargs``, parsed flags as a dict) that are :data:`ENV_ARGUMENTS`,
    in that order: what ``gym.make("GlimpseMNIST-v0", split=..., **env_arguments(values))`` takes for the task."""
    return {name: values[name] for name in ENV_ARGUMENTS if name in values}
