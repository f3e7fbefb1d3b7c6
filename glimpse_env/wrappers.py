"""Wrappers that let generic RL libraries drive GlimpseMNIST."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from glimpse_env.config import NUM_CLASSES
from glimpse_env.vector_env import check_numbers


class FlattenAction(gym.ActionWrapper):
    """Exposes the ``Dict(location, prediction)`` action as one ``Box(12)``: location ``(x, y)``, then 10 scores.

    Libraries such as stable-baselines3 support Dict observations but not Dict actions. The class scores are
    bounded to ``[-score_bound, score_bound]`` so that policies with squashed or clipped Gaussian actions can
    express them; only their argmax matters for the sparse reward.
    """

    def __init__(self, env: gym.Env, score_bound: float = 1.0) -> None:
        super().__init__(env)
        bound = check_numbers([score_bound], "score_bound", (1,), "cpu")  # a real number: no bool, str, NaN, inf
        if not bound.item() > 0:
            raise ValueError(f"score_bound must be a real number > 0, got {score_bound!r}")
        low = np.concatenate([[-1.0, -1.0], np.full(NUM_CLASSES, -score_bound)]).astype(np.float32)
        self.action_space = spaces.Box(low, -low, dtype=np.float32)

    def action(self, action: Any) -> dict[str, np.ndarray]:
        flat = check_numbers(action, "action", (2 + NUM_CLASSES,), "cpu").numpy()
        return {"location": flat[:2], "prediction": flat[2:]}
