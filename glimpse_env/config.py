"""The task's configuration: one frozen dataclass, validated once, shared by the single and the vector env."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral

SPLITS = ("train", "validation", "test")
REWARDS = ("sparse", "dense")
FIRST_LOCATIONS = ("random", "center")
MNIST_SIDE = 28
NUM_CLASSES = 10


def _check_int(name: str, value: object, minimum: int, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


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
        _check_int("size", self.size, MNIST_SIDE, f">= {MNIST_SIDE} (the MNIST digit must fit on the canvas)")
        _check_int("scales", self.scales, 1, ">= 1")
        _check_int("glimpse_size", self.glimpse_size, 1, f">= 1 and <= size ({self.size})")
        if self.glimpse_size > self.size:
            raise ValueError(f"glimpse_size must be an integer >= 1 and <= size ({self.size}), got {self.glimpse_size}")
        largest = self.glimpse_size * 2 ** (self.scales - 1)
        if largest > 2 * self.size:
            raise ValueError(
                f"scales={self.scales} with glimpse_size={self.glimpse_size} gives a largest scale of {largest} "
                f"pixels, more than twice the canvas (size={self.size}), which would see the whole canvas with room "
                f"to spare from anywhere; allowed: glimpse_size * 2**(scales - 1) <= {2 * self.size}"
            )
        _check_int("n_glimpses", self.n_glimpses, 1, ">= 1")
        _check_int("clutter", self.clutter, 0, ">= 0")
        _check_choice("split", self.split, SPLITS)
        _check_choice("reward", self.reward, REWARDS)
        _check_choice("first_location", self.first_location, FIRST_LOCATIONS)
