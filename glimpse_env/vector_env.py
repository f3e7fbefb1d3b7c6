"""The natively batched GlimpseMNIST environment: thousands of episodes at once, in torch, on CPU or CUDA.

This is the one implementation of the task. :class:`glimpse_env.env.GlimpseMNISTEnv` is this env with one slot.
"""

from __future__ import annotations

import os
import reprlib
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from glimpse_env.canvas import Layout, canvas_integrals, compose, evaluation_layouts, random_layout, traceable
from glimpse_env.config import MAX_SEED, NUM_CLASSES, GlimpseConfig, _check_int, resolve_device
from glimpse_env.data import DigitSet, check_data_dir, load_digits
from glimpse_env.retina import glimpse_from_integral

RESET_OPTIONS = {"indices", "location", "slots_per_canvas", "check"}


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


def check_reset_options(options: Any, allowed: set[str]) -> dict[str, Any]:
    """``options`` as a dict (None: empty), or a ``ValueError`` naming ``options`` and the keys it may hold."""
    keys = ", ".join(map(repr, sorted(allowed)))
    if options is None:
        return {}
    if not isinstance(options, dict):  # a string would otherwise be read as a set of one-letter keys
        raise ValueError(f"reset options must be None or a dict with keys among {keys}; got {reprlib.repr(options)}")
    unknown = sorted(map(repr, set(options) - allowed))  # repr: keys of mixed types do not sort
    if unknown:
        raise ValueError(f"reset options may only contain {keys}; got {', '.join(unknown)}")
    return options


def check_numbers(
    value: Any, name: str, shape: tuple[int, ...], device: torch.device | str, integer: bool = False
) -> torch.Tensor:
    """``value`` as a tensor of ``shape`` on ``device``: float32 and finite, or with ``integer``, int64.

    ``value`` may be a tensor (on any device; one that requires grad is detached, since the env only reads it), a
    numpy array or nested lists of numbers. Booleans, complex numbers, strings and other objects raise a
    ``ValueError`` naming ``name``; they are never coerced (``True`` is no coordinate, and a cast would drop an
    imaginary part).
    """
    allowed = f"{'integers' if integer else 'real numbers'} (not booleans, complex numbers or strings) of shape {shape}"
    if isinstance(value, torch.Tensor):
        array = value.detach()
        refused = array.dtype == torch.bool or array.is_complex() or (integer and array.is_floating_point())
        got = f"a {array.dtype} tensor"
    else:
        try:
            array = np.asarray(value)
        except (ValueError, TypeError, RuntimeError) as error:  # ragged lists; tensors that require grad in a list
            raise ValueError(f"{name} must be {allowed}; got {reprlib.repr(value)} ({error})") from None
        # A list's booleans hide in a numeric array ([True, 0.5] is float64), so a list's elements are looked at.
        holds_bool = not isinstance(value, np.ndarray) and any(
            isinstance(element, (bool, np.bool_)) for element in np.asarray(value, dtype=object).flat
        )
        refused = array.dtype.kind not in ("iu" if integer else "iuf") or holds_bool
        got = f"a {array.dtype} array" if isinstance(value, np.ndarray) else reprlib.repr(value)
    if refused:
        raise ValueError(f"{name} must be {allowed}, got {got}")
    if tuple(array.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(array.shape)}")
    if isinstance(array, np.ndarray):
        with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf, refused below
            array = torch.from_numpy(array.astype(np.int64 if integer else np.float32))  # also float16, longdouble
    tensor = array.to(device, torch.int64 if integer else torch.float32)
    if not integer and not bool(torch.isfinite(tensor).all()):
        raise ValueError(f"{name} must be finite; it holds NaN or inf (or values beyond float32's range)")
    return tensor


def trusted(value: torch.Tensor | None, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
    """A trusted caller's tensor as the env reads it (detached, on ``device``), unchecked."""
    return None if value is None else value.detach().to(device, dtype)


def check_action(
    action: Any, name: str, shapes: dict[str, tuple[int, ...]], device: torch.device | str
) -> dict[str, torch.Tensor]:
    """``action``, a dict with exactly the keys of ``shapes``, as checked tensors (see :func:`check_numbers`)."""
    if not isinstance(action, dict) or set(action) != set(shapes):
        keys = " and ".join(map(repr, shapes))
        if isinstance(action, dict):  # repr: keys of mixed types do not sort
            got = f"keys {', '.join(sorted(map(repr, action)))}" if action else "an empty dict"
        else:
            got = f"a {type(action).__name__}"
        raise ValueError(f"{name} must be a dict with keys {keys}, got {got}")
    return {key: check_numbers(action[key], f"{name}['{key}']", shape, device) for key, shape in shapes.items()}


class GlimpseMNISTVectorEnv(VectorEnv):
    """``num_envs`` GlimpseMNIST episodes stepped together, as torch tensors on ``device``.

    Same task, arguments and rules as :class:`glimpse_env.env.GlimpseMNISTEnv` (read its docstring), batched:

    * observations are ``{"glimpse": (N, k, g, g), "location": (N, 2)}`` float32 tensors on ``device``; rewards
      (float32), terminations and truncations (bool) are ``(N,)`` tensors there too. Actions may be tensors (on
      ``device``, fastest; one that requires grad is read detached) or arrays: ``{"location": (N, 2), "prediction":
      (N, 10)}``, refused as the single env's are (see :func:`check_numbers`). For numpy in and out, wrap it:
      ``gymnasium.wrappers.vector.ArrayConversion(envs, env_xp=torch, target_xp=numpy)``.
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
    * ``options={"check": False}`` and ``step(actions, check=False)`` are for a trusted caller (a trainer's own
      tensors, on ``device``, of the right shapes and ranges): they skip the range and finite checks, which read the
      tensors on the host (a sync that stalls a GPU). Everyone else keeps the default, and a bad action its
      ``ValueError``.

    The task's keyword arguments are the fields of :class:`glimpse_env.config.GlimpseConfig` (defaults and checks
    there). Extra arguments: ``num_envs`` (>= 1), ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``) and
    ``digits`` (a :class:`glimpse_env.data.DigitSet` to use instead of loading the split, e.g. a test fixture).
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int = 1,
        device: torch.device | str = "cpu",
        data_dir: str | os.PathLike | None = None,
        digits: DigitSet | None = None,
        render_mode: str | None = None,
        **arguments: Any,
    ) -> None:
        # The task's arguments (size, scales, ..., split, reward) are GlimpseConfig's fields: their one home.
        num_envs = _check_int("num_envs", num_envs, 1, ">= 1")
        check_data_dir(data_dir)  # even beside digits=: a wrong type is a mistake either way
        if digits is not None and not isinstance(digits, DigitSet):
            raise ValueError(f"digits must be None or a glimpse_env.DigitSet, got {type(digits).__name__}")
        if render_mode is not None:
            raise ValueError(
                f"render_mode must be None for the vector env (got {render_mode!r}); render a single "
                "GlimpseMNIST-v0 env with render_mode='rgb_array' or 'human' instead"
            )
        self.config = config = GlimpseConfig(**arguments)
        self.device = resolve_device(device)
        self.num_envs = num_envs
        self.digits = digits.to(self.device) if digits is not None else load_digits(config.split, data_dir, self.device)
        self._evaluation_layouts: Layout | None = None
        if config.split != "train":
            self._evaluation_layouts = evaluation_layouts(len(self.digits), config.size, config.clutter, self.device)

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
        # Everything is checked before the seed is used: a refused reset leaves the env as it was.
        options = check_reset_options(options, RESET_OPTIONS)
        group = self._check_slots_per_canvas(options.get("slots_per_canvas", 1))
        check = self._check_flag(options.get("check", True), "options['check']")
        indices, chosen = options.get("indices"), options.get("location")
        if check:
            # A key given is checked, None included: only a missing key means "random" or "the env's own".
            indices = self._check_indices(indices, group) if "indices" in options else None
            if "location" in options:
                chosen = check_numbers(chosen, "options['location']", (self.num_envs, 2), self.device)
        else:  # a trusted caller's tensors (a trainer's own): the range and finite checks read them on the host
            indices = trusted(indices, self.device, torch.int64)
            chosen = trusted(chosen, self.device, torch.float32)
        if seed is not None:
            seed = _check_int("seed", seed, 0, f"in [0, {MAX_SEED}] or None", MAX_SEED)
            self._np_random, self._np_random_seed = seeding.np_random(seed)
            self._generator.manual_seed(seed)
        if indices is None:
            indices = self._random_indices(self.num_envs // group).repeat_interleave(group)
        config, device = self.config, self.device

        canvas_indices = indices[::group]  # one per canvas
        if self._evaluation_layouts is not None:
            layout = self._evaluation_layouts[canvas_indices]
        else:
            layout = random_layout(
                len(canvas_indices), config.size, config.clutter, len(self.digits), self._generator, device
            )
        # Once per canvas (or not at all, without clutter): every glimpse is then a few gathers. The last reset's
        # composed tables (a canvas per slot: rows is None) are not needed any more: written over, not reallocated.
        previous = self._integral
        reuse = previous.table if config.clutter and previous is not None and previous.rows is None else None
        self._integral = canvas_integrals(self.digits, canvas_indices, layout, config.size, reuse, config.scales)
        self._integral = self._integral.repeat_interleave(group)
        if group > 1:
            layout = layout[torch.arange(len(canvas_indices), device=device).repeat_interleave(group)]
        self._layout, self._canvases = layout, None
        self.indices, self.labels = indices, self.digits.labels[indices]

        if chosen is not None:
            location = chosen.clamp(-1.0, 1.0)
        elif config.first_location == "random":
            location = torch.rand(self.num_envs, 2, generator=traceable(self._generator), device=device) * 2.0 - 1.0
        else:
            location = torch.zeros(self.num_envs, 2, device=device)
        self.locations = torch.zeros(self.num_envs, config.n_glimpses, 2, device=device)
        self._elapsed, self._terminated = 0, False
        return self._observe(location), {}

    def _random_indices(self, count: int) -> torch.Tensor:
        generator = traceable(self._generator)
        return torch.randint(0, len(self.digits), (count,), generator=generator, device=self.device)

    @staticmethod
    def _check_flag(value: Any, name: str) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {reprlib.repr(value)}")
        return value

    def _check_slots_per_canvas(self, group: Any) -> int:
        name, allowed = "options['slots_per_canvas']", f">= 1 that divides num_envs ({self.num_envs})"
        group = _check_int(name, group, 1, allowed, self.num_envs)
        if self.num_envs % group:
            raise ValueError(f"{name} must be an integer {allowed}, got {group}")
        return group

    def _check_indices(self, indices: Any, group: int = 1) -> torch.Tensor:
        indices = check_numbers(indices, "options['indices']", (self.num_envs,), self.device, integer=True)
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
        return indices

    # ------------------------------------------------------------------ step
    def step(
        self, actions: dict[str, Any], check: bool = True
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """One glimpse for every slot. ``check=False`` (a trusted caller, e.g. a trainer's own actions, tensors of
        the right shapes on ``device``) skips the finite check, which waits on the device (a host sync)."""
        if self._elapsed is None:
            raise RuntimeError("step() was called before reset(); call reset() first")
        if self._check_flag(check, "check"):
            location, prediction = self._check_actions(actions)
        else:
            location = trusted(actions["location"], self.device, torch.float32)
            prediction = trusted(actions["prediction"], self.device, torch.float32)
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
        shapes = {"location": (self.num_envs, 2), "prediction": (self.num_envs, NUM_CLASSES)}
        checked = check_action(actions, "actions", shapes, self.device)
        return checked["location"], checked["prediction"]

    @property
    def canvases(self) -> torch.Tensor | None:
        """The current episodes' canvases (``N x size x size`` uint8), drawn on first use; None before reset."""
        if self._canvases is None and self._layout is not None:
            self._canvases = compose(self.digits, self.indices, self._layout, self.config.size)
        return self._canvases

    @property
    def digit_offsets(self) -> torch.Tensor | None:
        """Where the current episodes' digits sit: the canvas pixel ``(x, y)`` of each digit's top-left corner
        (``N x 2`` int64 on ``device``; the digit covers ``x .. x + 27``, ``y .. y + 27``); None before reset. A copy:
        changing it changes nothing in the env."""
        return None if self._layout is None else self._layout.digit_offset.clone()

    @property
    def elapsed_glimpses(self) -> int:
        """Glimpses taken so far in the current episode (0 before the first reset)."""
        return self._elapsed or 0

    @property
    def episode_over(self) -> bool:
        return self._terminated
