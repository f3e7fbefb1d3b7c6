"""Saving and loading a trained agent: the one way every script, the play window and the tests do it.

A checkpoint is one ``torch.save`` file holding the model's config and weights, the env arguments it was trained
for (so a viewer can build the matching env) and whatever else the caller adds (a trainer's optimizer state,
metrics). It is written atomically: a kill mid-write leaves the previous file intact, never a truncated one.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import torch

from agents.ram import RAMConfig, RecurrentAttentionModel

FORMAT = "glimpse-mnist-ram/1"


class LoadedAgent(NamedTuple):
    model: RecurrentAttentionModel
    env_kwargs: dict[str, Any]  # the GlimpseMNIST-v0 arguments the model was trained on
    extra: dict[str, Any]  # anything else the checkpoint holds (training state, metrics)


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, flushed to disk, then renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as tmp:
        try:
            torch.save(payload, tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            os.unlink(tmp.name)
            raise
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp.name, 0o666 & ~umask)  # as an ordinary file would be, not the temporary file's 0600
    os.replace(tmp.name, path)


def save_agent(
    path: str | os.PathLike,
    model: RecurrentAttentionModel,
    env_kwargs: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    payload = {
        "format": FORMAT,
        "model_config": asdict(model.config),
        "env_kwargs": dict(env_kwargs),
        "model": model.state_dict(),
        "extra": extra or {},
    }
    atomic_torch_save(payload, path)


def read_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The raw payload of a checkpoint, with a clear error for a missing, foreign or damaged file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:
        raise ValueError(f"checkpoint {path} is damaged or not a torch checkpoint ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a glimpse-mnist RAM checkpoint (expected format {FORMAT!r})")
    return payload


def load_agent(path: str | os.PathLike, device: torch.device | str = "cpu") -> LoadedAgent:
    """The trained model (in eval mode, on ``device``), its env arguments and the checkpoint's extras."""
    payload = read_checkpoint(path, device)
    model = RecurrentAttentionModel(RAMConfig(**payload["model_config"])).to(device)
    model.load_state_dict(payload["model"])
    model.eval()
    return LoadedAgent(model, payload["env_kwargs"], payload["extra"])
