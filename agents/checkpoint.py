"""Saving and loading a trained agent: the one way every script, the play window and the tests do it.

A checkpoint is one ``torch.save`` file holding the model's config and weights, the env arguments it was trained
for (so a viewer can build the matching env) and whatever else the caller adds (a trainer's optimizer state,
metrics). It is written atomically: a kill mid-write leaves the previous file intact, never a truncated one.
Reading checks everything before a model is handed out: a damaged, foreign, other-version or inconsistent file is
a ``ValueError`` naming the file and what is wrong (a missing one a ``FileNotFoundError``); the file is only read.
"""

from __future__ import annotations

import os
import pickle
import re
import reprlib
import zipfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, NamedTuple

import torch

from agents.pretrained import resolve_checkpoint
from agents.ram import RAMConfig, RecurrentAttentionModel
from glimpse_env.config import ENV_ARGUMENTS, NUM_CLASSES, GlimpseConfig, _check_int, resolve_device
from glimpse_env.files import atomic_write

FORMAT = "glimpse-mnist-ram/1"
REQUIRED = ("model", "model_config", "env_kwargs")  # each a dict; "extra" (a dict) is optional
MODEL_KEYS = frozenset(field.name for field in fields(RAMConfig))
# The task's env arguments (glimpse_env.config.ENV_ARGUMENTS): what the trainer writes and a viewer builds its env
# from; the split and the reward (and the data source, the device) are chosen by whoever builds the env.
ENV_KEYS = frozenset(ENV_ARGUMENTS)


class LoadedAgent(NamedTuple):
    model: RecurrentAttentionModel
    env_kwargs: dict[str, Any]  # the GlimpseMNIST-v0 arguments the model was trained on
    extra: dict[str, Any]  # anything else the checkpoint holds (training state, metrics)


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda file: torch.save(payload, file))


def save_agent(
    path: str | os.PathLike,
    model: RecurrentAttentionModel,
    env_kwargs: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``model`` with the env arguments it is for; refused (``ValueError``, nothing written) when
    :func:`load_agent` would refuse the file: env arguments that are not the task's or disagree with the model."""
    if not isinstance(env_kwargs, dict) or not isinstance(extra, (dict, type(None))):
        raise ValueError(
            f"env_kwargs must be a dict and extra a dict or None, got {type(env_kwargs).__name__} and "
            f"{type(extra).__name__}"
        )
    try:
        _check_configs(asdict(model.config), env_kwargs)
    except ValueError as error:
        raise ValueError(f"save_agent would write a checkpoint that cannot be loaded ({path}): {error}") from error
    payload = {
        "format": FORMAT,
        "model_config": asdict(model.config),
        "env_kwargs": dict(env_kwargs),
        "model": model.state_dict(),
        "extra": extra or {},
    }
    atomic_torch_save(payload, path)


def read_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The payload of a checkpoint, checked: its format, its keys, its model config against :class:`RAMConfig`, its
    env arguments against the env's, and its weights (names, shapes, finite values) against that config.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError``, naming the file and what is wrong, for a
    damaged, foreign, other-version or inconsistent one.
    """
    return _read(path, device)[0]


def load_agent(path: str | os.PathLike, device: torch.device | str = "cpu") -> LoadedAgent:
    """The trained model (in eval mode, on ``device``), its env arguments and the checkpoint's extras.

    ``path`` may also name a shipped agent (``"cluttered60-8g"``: :mod:`agents.pretrained`). Raises as
    :func:`read_checkpoint` does (an unknown name: ``ValueError`` listing the known ones).
    """
    payload, model = _read(resolve_checkpoint(path), device)
    return LoadedAgent(model.eval(), payload["env_kwargs"], payload.get("extra", {}))


def _read(path: str | os.PathLike, device: torch.device | str) -> tuple[dict[str, Any], RecurrentAttentionModel]:
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a file path (str or os.PathLike), got {type(path).__name__} {path!r}")
    path, device = Path(path), resolve_device(device)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    payload = _load_payload(path, device)
    model = _build_model(path, payload, device)
    return payload, model


def _load_payload(path: Path, device: torch.device) -> dict[str, Any]:
    # torch.save writes a zip archive with a CRC per entry; torch.load checks neither the archive's end nor the CRCs,
    # so a truncated file or a flipped byte in the weights is caught here, before unpickling.
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except Exception as error:  # BadZipFile, EOFError, a UnicodeDecodeError from a damaged entry name, ...
        raise ValueError(
            f"checkpoint {path} is truncated, damaged or not a torch checkpoint: it is not a complete zip archive, "
            f"as torch.save writes ({error})"
        ) from error
    if damaged is not None:
        raise ValueError(f"checkpoint {path} is corrupted: entry {damaged} fails its CRC check (damaged after writing)")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:  # torch's weights-only unpickler refused it
        foreign = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if foreign:
            raise ValueError(
                f"checkpoint {path} holds a {foreign.group(1)} object, where save_agent writes only tensors and plain "
                "containers; it was not unpickled, since that could run code from it"
            ) from error
        raise ValueError(f"checkpoint {path} is damaged: its pickled payload cannot be read") from error
    except Exception as error:  # torch's reader: damaged records inside an intact archive
        reason = f"{type(error).__name__}: {error}"
        raise ValueError(f"checkpoint {path} is damaged or not a torch checkpoint ({reason})") from error
    if not isinstance(payload, dict) or "format" not in payload:
        kind = f"a dict of {sorted(map(str, payload))}" if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path} is not a glimpse-mnist RAM checkpoint (expected format {FORMAT!r}): it holds {kind}")
    if not isinstance(payload["format"], str) or payload["format"] != FORMAT:
        raise ValueError(
            f"{path} is not a glimpse-mnist RAM checkpoint of this version: format {reprlib.repr(payload['format'])}, "
            f"this version reads {FORMAT!r}"
        )
    missing = [key for key in REQUIRED if key not in payload]
    if missing:
        held = sorted(map(str, payload))
        raise ValueError(f"checkpoint {path} lacks {', '.join(map(repr, missing))} (it holds {held})")
    for key in (*REQUIRED, "extra"):
        if key in payload and not isinstance(payload[key], dict):
            raise ValueError(f"checkpoint {path}: {key!r} must be a dict, got {type(payload[key]).__name__}")
    return payload


def _check_configs(model_config: dict[str, Any], env_kwargs: dict[str, Any]) -> RAMConfig:
    """The model's config, checked with the env arguments it goes with; else a ``ValueError`` saying what is wrong."""
    config = RAMConfig(**_only_known("model_config", model_config, MODEL_KEYS))
    env_config = GlimpseConfig(**_only_known("env_kwargs", env_kwargs, ENV_KEYS))
    # RAMConfig leaves num_classes unchecked; the env's digits have 10.
    allowed = f"equal to {NUM_CLASSES} (the digits' classes)"
    _check_int("model_config num_classes", config.num_classes, NUM_CLASSES, allowed, NUM_CLASSES)
    for name in ("scales", "glimpse_size"):  # the glimpses the env serves must be those the model reads
        if getattr(env_config, name) != getattr(config, name):
            raise ValueError(
                f"env_kwargs {name}={getattr(env_config, name)} but model_config {name}={getattr(config, name)}; "
                "they must agree"
            )
    return config


def _build_model(path: Path, payload: dict[str, Any], device: torch.device) -> RecurrentAttentionModel:
    """The model of ``payload``'s config with its weights, or a ``ValueError`` naming the file and the fault."""
    try:
        config = _check_configs(payload["model_config"], payload["env_kwargs"])
    except ValueError as error:
        raise ValueError(f"checkpoint {path}: {error}") from error
    model = RecurrentAttentionModel(config).to(device)
    weights, expected = payload["model"], model.state_dict()
    missing, unknown = sorted(set(expected) - set(weights)), sorted(map(str, set(weights) - set(expected)))
    if missing or unknown:
        raise ValueError(
            f"checkpoint {path}: the weights do not match its model_config: missing {missing or 'none'}, "
            f"unexpected {unknown or 'none'}"
        )
    for name, value in weights.items():
        want = expected[name]
        if not isinstance(value, torch.Tensor) or value.shape != want.shape or not value.is_floating_point():
            got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"checkpoint {path}: weight {name!r} must be a floating-point tensor of shape {tuple(want.shape)} "
                f"(as its model_config makes it), got {got}"
            )
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"checkpoint {path}: weight {name!r} holds NaN or inf; the model would output NaN")
    model.load_state_dict(weights)
    return model


def _only_known(key: str, values: dict[str, Any], known: frozenset[str]) -> dict[str, Any]:
    """``values`` if each of its keys is ``known``, else a ``ValueError`` naming the others (a missing key takes
    its default: checkpoints from before a field was added still load)."""
    unknown = sorted(map(repr, set(values) - known))
    if unknown:
        raise ValueError(f"{key} holds unknown keys {', '.join(unknown)} (allowed: {', '.join(sorted(known))})")
    return values
