"""GlimpseMNIST: a Gymnasium environment of retina glimpses of MNIST digits.

``import glimpse_env`` registers ``GlimpseMNIST-v0`` (single env: ``gym.make``; natively batched torch env:
``gym.make_vec(..., num_envs=N, device=...)``). The retina is :func:`glimpse_env.retina.retina`.
"""

import gymnasium as gym

from glimpse_env.config import GlimpseConfig
from glimpse_env.data import DigitSet, load_digits
from glimpse_env.files import atomic_write, file_sha256

ENV_ID = "GlimpseMNIST-v0"

if ENV_ID not in gym.registry:
    gym.register(
        id=ENV_ID,
        entry_point="glimpse_env.env:GlimpseMNISTEnv",
        vector_entry_point="glimpse_env.vector_env:GlimpseMNISTVectorEnv",
    )

__all__ = [
    "ENV_ID",
    "DigitSet",
    "GlimpseConfig",
    "atomic_write",
    "file_sha256",
    "load_digits",
]
