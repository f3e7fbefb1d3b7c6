"""The natively batched GlimpseMNIST environment: thousands of episodes at once, in torch, on CPU or CUDA.

This is the one implementation of the task. :class:`glimpse_env.env.GlimpseMNISTEnv` is this env with one slot.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from glimpse_env.canvas import Layout, canvas_integrals, compose, evaluation_layouts, random_layout
from glimpse_env.config import NUM_CLASSES, GlimpseConfig
from glimpse_env.data import DigitSet, load_digits
from glimpse_env.retina import glimpse_from_integral

RESET_OPTIONS = {"indices", "location", "slots_per_canvas"}


def observation_space(config: GlimpseConfig) -> spaces.Dict:
    k, g = config.scales, config.glimpse_size
    return spaces.Dict(
        {
            "glimpse": spaces.Box(0.0, 1.0, (k, g, g), np.float32),
            "location": spaces.Box(-1.0, 1.0, (2,), np.float32),
        }
    )


def action_space(config: GlimpseConfig) -> spaces.Dict:
    return spaces.Dict(
        {
            "location": spaces.Box(-1.0, 1.0, (2,), np.float32),
            "prediction": spaces.Box(-np.inf, np.inf, (NUM_CLASSES,), np.float32),
        }
    )


def resolve_device(device: torch.device | str) -> torch.device:
    """``"auto"`` picks CUDA when present; asking for an absent CUDA is a clear error, not a crash later."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for, but torch sees no CUDA GPU; use device='cpu' or 'auto'")
    return device


class GlimpseMNISTVectorEnv(VectorEnv):
    """``num_envs`` GlimpseMNIST episodes stepped together, as torch tensors on ``device``.

    Same task, arguments and rules as :class:`glimpse_env.env.GlimpseMNISTEnv` (read its docstring), batched:

    * observations are ``{"glimpse": (N, k, g, g), "location": (N, 2)}`` float32 tensors on ``device``; rewards
      (float32), terminations and truncations (bool) are ``(N,)`` tensors there too. Actions may be tensors (on
      ``device``, fastest) or arrays: ``{"location": (N, 2), "prediction": (N, 10)}``. For numpy in and out, wrap
      it: ``gymnasium.wrappers.vector.ArrayConversion(envs, env_xp=torch, target_xp=numpy)``.
    * all episodes have the same length, so the batch starts and ends together: ``info["label"]`` (an ``(N,)``
      int64 tensor, with the mask ``info["_label"]``) comes with the terminating step. The step after it resets
      the batch (``AutoresetMode.NEXT_STEP``) with random dataset indices; call ``reset`` to choose them.
    * ``reset(options={"indices": LongTensor of shape (N,)})`` presents the chosen dataset indices of the split;
      an index may repeat (that is how a trainer shows one image to M sampled location paths). Each slot gets
      its own canvas (its own translation and distractors) unless ``options={"slots_per_canvas": M}``: then
      each run of M consecutive slots shows one canvas (their indices must agree), composed once, so M location
      paths see exactly the same input (the paper's M samples of one episode, and M times less canvas work).
      ``options={"location": (N, 2)}`` takes the first glimpses there instead of at ``first_location`` (an agent
      that chooses its first glimpse too); values are clipped to ``[-1, 1]`` like a step's.

    Extra arguments: ``num_envs`` (>= 1), ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``) and
    ``digits`` (a :class:`glimpse_env.data.DigitSet` to use instead of loading the split, e.g. a test fixture).
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        size: int = 28,
        scales: int = 1,
        glimpse_size: int = 8,
        n_glimpses: int = 6,
        clutter: int = 0,
        split: str = "train",
        reward: str = "sparse",
        first_location: str = "random",
        data_dir: str | os.PathLike | None = None,
        digits: DigitSet | None = None,
        render_mode: str | None = None,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if render_mode is not None:
            raise ValueError(
                f"render_mode must be None for the vector env (got {render_mode!r}); render a single "
                "GlimpseMNIST-v0 env with render_mode='rgb_array' or 'human' instead"
            )
        self.config = GlimpseConfig(size, scales, glimpse_size, n_glimpses, clutter, split, reward, first_location)
        self.device = resolve_device(device)
        self.num_envs = num_envs
        self.digits = digits.to(self.device) if digits is not None else load_digits(split, data_dir, self.device)
        self._evaluation_layouts: Layout | None = None
        if split != "train":
            self._evaluation_layouts = evaluation_layouts(len(self.digits), size, clutter, self.device)

        self.single_observation_space = observation_space(self.config)
        self.single_action_space = action_space(self.config)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)

        self._generator = torch.Generator(device=self.device)
        self._generator.seed()  # unseeded envs differ from run to run, as Gymnasium's do
        self._elapsed: int | None = None  # glimpses taken in the current episode; None before the first reset
        self._terminated = False
        self._integral = None
        self._layout: Layout | None = None
        self._canvases: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None
        self.indices: torch.Tensor | None = None
        self.locations: torch.Tensor | None = None  # N x n_glimpses x 2: where each glimpse was taken so far
        self._last_observation: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ reset
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
            self._generator.manual_seed(int(seed))
        options = options or {}
        if not isinstance(options, dict):
            raise ValueError(f"reset options must be a dict, got {type(options).__name__}")
        unknown = set(options) - RESET_OPTIONS
        if unknown:
            raise ValueError(f"reset options may only contain {sorted(RESET_OPTIONS)}; got {sorted(unknown)}")
        group = self._check_slots_per_canvas(options.get("slots_per_canvas", 1))
        if "indices" in options:
            indices = self._check_indices(options["indices"], group)
        else:
            indices = self._random_indices(self.num_envs // group).repeat_interleave(group)
        chosen = self._check_finite(options["location"], "options['location']", 2) if "location" in options else None
        config, device = self.config, self.device

        canvas_indices = indices[::group]  # one per canvas
        if self._evaluation_layouts is not None:
            layout = self._evaluation_layouts[canvas_indices]
        else:
            layout = random_layout(
                len(canvas_indices), config.size, config.clutter, len(self.digits), self._generator, device
            )
        # Once per canvas (or not at all, without clutter): every glimpse is then a few gathers.
        self._integral = canvas_integrals(self.digits, canvas_indices, layout, config.size).repeat_interleave(group)
        if group > 1:
            layout = layout[torch.arange(len(canvas_indices), device=device).repeat_interleave(group)]
        self._layout, self._canvases = layout, None
        self.indices, self.labels = indices, self.digits.labels[indices]

        if chosen is not None:
            location = chosen.clamp(-1.0, 1.0)
        elif config.first_location == "random":
            location = torch.rand(self.num_envs, 2, generator=self._generator, device=device) * 2.0 - 1.0
        else:
            location = torch.zeros(self.num_envs, 2, device=device)
        self.locations = torch.zeros(self.num_envs, config.n_glimpses, 2, device=device)
        self._elapsed, self._terminated = 0, False
        return self._observe(location), {}

    def _random_indices(self, count: int) -> torch.Tensor:
        return torch.randint(0, len(self.digits), (count,), generator=self._generator, device=self.device)

    def _check_slots_per_canvas(self, group: Any) -> int:
        if isinstance(group, bool) or not isinstance(group, int) or group < 1 or self.num_envs % group:
            raise ValueError(
                f"options['slots_per_canvas'] must be an integer >= 1 that divides num_envs ({self.num_envs}), "
                f"got {group!r}"
            )
        return group

    def _check_indices(self, indices: Any, group: int = 1) -> torch.Tensor:
        try:
            indices = torch.as_tensor(indices, device=self.device)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(f"options['indices'] must be integers of shape ({self.num_envs},); {error}") from error
        if indices.shape != (self.num_envs,) or indices.dtype.is_floating_point or indices.dtype == torch.bool:
            raise ValueError(
                f"options['indices'] must be integers of shape ({self.num_envs},), got {indices.dtype} "
                f"{tuple(indices.shape)}"
            )
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self.digits)):
            raise ValueError(
                f"options['indices'] must lie in [0, {len(self.digits) - 1}] (the {self.config.split} split), "
                f"got values from {int(indices.min())} to {int(indices.max())}"
            )
        if group > 1 and bool((indices.view(-1, group) != indices[::group, None]).any()):
            raise ValueError(
                f"options['indices'] must repeat each index over runs of slots_per_canvas={group} slots, since those "
                "slots show one canvas"
            )
        return indices.long()

    # ------------------------------------------------------------------ step
    def step(
        self, actions: dict[str, Any]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        if self._elapsed is None:
            raise RuntimeError("step() was called before reset(); call reset() first")
        location, prediction = self._check_actions(actions)
        if self._terminated:  # next-step autoreset: this step's action is ignored
            observation, info = self.reset()
            zeros = torch.zeros(self.num_envs, device=self.device)
            return observation, zeros, zeros.bool(), zeros.bool(), info

        config = self.config
        truncated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        if config.reward == "dense":
            reward = torch.log_softmax(prediction, dim=-1).gather(1, self.labels[:, None]).squeeze(1)
        else:
            reward = torch.zeros(self.num_envs, device=self.device)

        if self._elapsed < config.n_glimpses:
            observation = self._observe(location.clamp(-1.0, 1.0))
            return observation, reward, truncated.clone(), truncated, {}

        # The step after the last glimpse grades the prediction; its location is unused.
        self._terminated = True
        if config.reward == "sparse":
            reward = (prediction.argmax(dim=-1) == self.labels).to(torch.float32)
        terminated = torch.ones(self.num_envs, dtype=torch.bool, device=self.device)
        info = {"label": self.labels, "_label": terminated.clone()}
        final = {key: value.clone() for key, value in self._last_observation.items()}  # not the last step's object
        return final, reward, terminated, truncated, info

    def _observe(self, location: torch.Tensor) -> dict[str, torch.Tensor]:
        glimpse = glimpse_from_integral(self._integral, location, self.config.glimpse_size, self.config.scales)
        self.locations[:, self._elapsed] = location
        self._elapsed += 1
        self._last_observation = {"glimpse": glimpse, "location": location}
        return self._last_observation

    def _check_actions(self, actions: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(actions, dict) or set(actions) != {"location", "prediction"}:
            keys = sorted(actions) if isinstance(actions, dict) else type(actions).__name__
            raise ValueError(f"actions must be a dict with keys 'location' and 'prediction', got {keys}")
        location = self._check_finite(actions["location"], "actions['location']", 2)
        return location, self._check_finite(actions["prediction"], "actions['prediction']", NUM_CLASSES)

    def _check_finite(self, value: Any, name: str, width: int) -> torch.Tensor:
        value = torch.as_tensor(value, device=self.device)
        if value.shape != (self.num_envs, width):
            raise ValueError(f"{name} must have shape ({self.num_envs}, {width}), got {tuple(value.shape)}")
        value = value.to(torch.float32)
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite; it holds NaN or inf")
        return value

    @property
    def canvases(self) -> torch.Tensor | None:
        """The current episodes' canvases (``N x size x size`` uint8), drawn on first use; None before reset."""
        if self._canvases is None and self._layout is not None:
            self._canvases = compose(self.digits, self.indices, self._layout, self.config.size)
        return self._canvases

    @property
    def elapsed_glimpses(self) -> int:
        """Glimpses taken so far in the current episode (0 before the first reset)."""
        return self._elapsed or 0

    @property
    def episode_over(self) -> bool:
        return self._terminated
