"""``GlimpseMNIST-v0``: classify an MNIST digit from a few retina glimpses, choosing where to look."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from glimpse_env.config import MAX_SEED, NUM_CLASSES, _check_choice, _check_int
from glimpse_env.data import DigitSet
from glimpse_env.vector_env import GlimpseMNISTVectorEnv, check_action, check_numbers, check_reset_options

RESET_OPTIONS = {"index", "location"}


class GlimpseMNISTEnv(gym.Env):
    """Recognise an MNIST digit seen only through a few glimpses of a foveated retina (Mnih et al. 2014).

    ## Description
    A digit lies on a ``size x size`` canvas (28: plain MNIST; larger: translated to a uniform random position,
    optionally with ``clutter`` 8x8 distractor crops of other digits). The agent never sees the canvas: it sees
    ``n_glimpses`` glimpses, each a stack of ``scales`` patches of ``glimpse_size x glimpse_size`` pixels centred on
    one location, scale ``i`` covering ``glimpse_size * 2**i`` pixels averaged down (pixels outside the canvas are 0).
    It chooses where each next glimpse goes, then names the digit.

    ## Observation space
    ``Dict(glimpse=Box(0, 1, (scales, glimpse_size, glimpse_size), float32), location=Box(-1, 1, (2,), float32))``:
    the glimpse and the location ``(x, y)`` it was taken at; ``(-1, -1)`` is the canvas's top-left corner, ``(1, 1)``
    its bottom-right corner.

    ## Action space
    ``Dict(location=Box(-1, 1, (2,), float32), prediction=Box(-inf, inf, (10,), float32))``: where to take the next
    glimpse, and the current class scores (logits). A location outside ``[-1, 1]`` is clipped to it. Each entry may
    be a numpy array of any integer or floating dtype, a list, or a torch tensor (one that requires grad is read
    detached); NaN or inf, a wrong shape, booleans, complex numbers, strings or other objects, missing or extra keys
    raise ``ValueError`` naming the entry; nothing is coerced.

    ## Episode
    ``reset`` returns the first glimpse, at a uniform random location (``first_location="random"``) or at the centre
    (``"center"``). Each ``step`` returns the glimpse at the action's location, until ``n_glimpses`` glimpses have been
    taken; the step after that grades ``prediction`` and terminates (its location is unused, its observation repeats
    the last glimpse). An episode is therefore ``n_glimpses`` steps long and is never truncated. Stepping before
    ``reset`` or after termination raises ``RuntimeError``.

    ## Rewards
    ``reward="sparse"`` (the paper's): 1 if ``argmax(prediction)`` is the label at the final step, else 0; 0 before.
    ``reward="dense"``: at every step, the log-probability that ``softmax(prediction)`` gives the true class.

    ## Info
    ``info["label"]`` (int) at the terminal step only, so that a learner can train its classifier from the env.

    ## Arguments
    The task's: the fields of :class:`glimpse_env.config.GlimpseConfig`, their one home (defaults, limits, help):
    ``size``, ``scales``, ``glimpse_size`` (the largest scale, ``glimpse_size * 2**(scales-1)``, at most ``2 *
    size``), ``n_glimpses``, ``clutter``, ``split`` (the training split's canvases are drawn fresh each episode;
    evaluation splits have one fixed canvas per index, the same for everyone, distractors from the same split),
    ``reward`` and ``first_location``. Besides: ``data_dir=None`` (a folder of the four MNIST ``.gz`` files; default
    ``$GLIMPSE_MNIST_DIR``, else a download), ``render_mode=None`` (or ``"rgb_array"``, ``"human"``). Invalid values
    raise ``ValueError`` naming the parameter. ``reset(options={"index": i})`` presents dataset index ``i`` of the
    split; ``reset(options={"location": (x, y)})`` takes the first glimpse there instead of at ``first_location``. A
    bad seed (an integer in ``[0, 2**64 - 1]``, :data:`glimpse_env.config.MAX_SEED`, or None) or bad options raise
    ``ValueError`` before anything changes: the env is as it was.

    ## Variants (the paper's benchmarks)
    >>> gym.make("GlimpseMNIST-v0", size=28, scales=1, glimpse_size=8, n_glimpses=6)              # 28x28 MNIST
    >>> gym.make("GlimpseMNIST-v0", size=60, scales=3, glimpse_size=12, n_glimpses=4)             # translated
    >>> gym.make("GlimpseMNIST-v0", size=60, scales=3, glimpse_size=12, n_glimpses=8, clutter=4)  # cluttered 60x60
    >>> gym.make("GlimpseMNIST-v0", size=100, scales=4, glimpse_size=12, n_glimpses=8, clutter=8)  # cluttered 100x100

    The batched version, ``gym.make_vec("GlimpseMNIST-v0", num_envs=N, device="cpu" | "cuda", ...)``, runs N episodes
    at once in torch (see :class:`glimpse_env.vector_env.GlimpseMNISTVectorEnv`); this env is that one with one slot.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 4}

    def __init__(
        self,
        data_dir: str | os.PathLike | None = None,
        render_mode: str | None = None,
        digits: DigitSet | None = None,
        **arguments: Any,
    ) -> None:
        _check_choice("render_mode", render_mode, (None, *self.metadata["render_modes"]))
        # The task's arguments go through as they came: GlimpseConfig (in the batch) is their one home.
        self._batch = GlimpseMNISTVectorEnv(num_envs=1, device="cpu", data_dir=data_dir, digits=digits, **arguments)
        self.config = self._batch.config
        self.observation_space = self._batch.single_observation_space
        self.action_space = self._batch.single_action_space
        self.render_mode = render_mode
        self._torch_seeded = False
        self._prediction: np.ndarray | None = None  # the latest class scores, for rendering
        self._outcome: dict[str, Any] | None = None  # label and correctness once the episode ended
        self._renderer = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        # Everything is checked before the seed is used: a refused reset leaves the env as it was.
        options = check_reset_options(options, RESET_OPTIONS)
        batch_options = {}
        if "index" in options:
            count = len(self._batch.digits)
            allowed = f"in [0, {count - 1}] (the {self.config.split} split)"
            index = _check_int("options['index']", options["index"], 0, allowed, count - 1)
            batch_options["indices"] = torch.tensor([index])
        if "location" in options:
            batch_options["location"] = check_numbers(options["location"], "options['location']", (2,), "cpu")[None]
        if seed is not None:
            seed = _check_int("seed", seed, 0, f"in [0, {MAX_SEED}] or None", MAX_SEED)
        super().reset(seed=seed)
        if seed is None and not self._torch_seeded:
            seed = int(self.np_random.integers(2**62))  # Gymnasium drew a random seed; the batch follows it
        self._torch_seeded = True
        observation, _ = self._batch.reset(seed=seed, options=batch_options)
        self._prediction, self._outcome = None, None
        self._render_if_human()
        return self._to_numpy(observation), {}

    def step(self, action: dict[str, Any]) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        if self._batch.elapsed_glimpses == 0:
            raise RuntimeError("step() was called before reset(); call reset() first")
        if self._batch.episode_over:
            raise RuntimeError("the episode has ended (terminated=True); call reset() before stepping again")
        checked = check_action(action, "action", {"location": (2,), "prediction": (NUM_CLASSES,)}, "cpu")
        # Copies, so that the class scores kept for rendering are not the caller's tensor.
        batched = {name: value[None].clone() for name, value in checked.items()}
        observation, reward, terminated, truncated, batch_info = self._batch.step(batched)
        self._prediction = batched["prediction"][0].numpy()
        info = {}
        if bool(terminated[0]):
            label = int(batch_info["label"][0])
            info["label"] = label
            self._outcome = {"label": label, "correct": int(np.argmax(self._prediction)) == label}
        self._render_if_human()
        return self._to_numpy(observation), float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    @staticmethod
    def _to_numpy(observation: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {key: value[0].numpy() for key, value in observation.items()}

    # ------------------------------------------------------------------ what the episode looks like
    @property
    def canvas(self) -> np.ndarray:
        """The current canvas (``size x size`` uint8); hidden from the agent, shown by ``render``."""
        return self._batch.canvases[0].numpy()

    @property
    def glimpse_locations(self) -> np.ndarray:
        """Locations of the glimpses taken so far in this episode (``n x 2``)."""
        return self._batch.locations[0, : self._batch.elapsed_glimpses].numpy()

    @property
    def last_glimpse(self) -> np.ndarray:
        """The latest glimpse (``scales x glimpse_size x glimpse_size``), as the agent received it."""
        return self._batch._last_observation["glimpse"][0].numpy()

    @property
    def prediction(self) -> np.ndarray | None:
        """The class scores sent with the latest step (None right after ``reset``); shown by ``render``."""
        return None if self._prediction is None else self._prediction.copy()

    @property
    def outcome(self) -> dict[str, Any] | None:
        """``{"label": int, "correct": bool}`` once the episode has ended, else None; shown by ``render``."""
        return None if self._outcome is None else dict(self._outcome)

    def render(self) -> np.ndarray | None:
        """The current frame (``render_mode="rgb_array"``: an ``H x W x 3`` uint8 array) or, in ``"human"`` mode,
        the same frame shown in a pygame window. See :mod:`glimpse_env.render` for what a frame shows."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' or 'human'")
            return None
        if self._batch.elapsed_glimpses == 0:
            raise RuntimeError("render() was called before reset(); call reset() first")
        from glimpse_env.render import render_frame, show_frame

        frame = render_frame(self)
        if self.render_mode == "rgb_array":
            return frame
        self._renderer = show_frame(frame, self.metadata["render_fps"], self._renderer)
        return None

    def _render_if_human(self) -> None:
        if self.render_mode == "human":
            self.render()

    def close(self) -> None:
        if self._renderer is not None:
            from glimpse_env.render import close_window

            close_window(self._renderer)
            self._renderer = None
        super().close()
