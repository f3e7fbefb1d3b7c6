"""Shipped agents by name, as torchvision's weights and the SB3 zoo do: ``load_agent("cluttered60-8g")``.

The known names are the ``.pt`` files at the top of the repository's ``assets/checkpoints/`` (each trained by the
recipe of the same name; its record is in ``assets/runs/``): :func:`pretrained_names` lists them. A checkpoint
argument that is an existing file is that file; a string that is not a file but a bare name (no folder, no
suffix) is a shipped agent's name, and an unknown name is an error listing the known ones. The checkpoints ship
with the repository, not with a wheel: installed without the repository, the error says so.

    from agents import load_agent
    model, env_kwargs, _ = load_agent("cluttered60-8g")
    python -m glimpse_env.play --agent cluttered60-8g
    python train/visualize.py mnist28-6g
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "assets" / "checkpoints"


def pretrained_names(folder: Path = CHECKPOINT_DIR) -> list[str]:
    """The names of the shipped agents, sorted: the ``.pt`` files at the top of ``folder`` (none when it is absent)."""
    if not folder.is_dir():
        return []
    return sorted(path.stem for path in folder.glob("*.pt") if path.is_file())


def is_agent_name(text: str) -> bool:
    """Whether ``text`` reads as a name rather than a path: no folder separator and no suffix such as ``.pt``."""
    separators = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    return bool(text) and not any(sep in text for sep in separators) and not Path(text).suffix and text not in {
        ".", ".."}


def pretrained_path(name: str, folder: Path = CHECKPOINT_DIR) -> Path:
    """The checkpoint of the shipped agent ``name``; a ``ValueError`` listing the known names for an unknown one,
    or saying that the checkpoints are absent (an install without the repository)."""
    names = pretrained_names(folder)
    if not names:
        raise ValueError(
            f"{name!r} is not a checkpoint file, and no shipped agents are installed: they are the .pt files of the "
            f"repository's assets/checkpoints/ ({folder} is missing or empty; a wheel or an install outside a clone "
            "of the repository lacks them). Clone the repository and install it with pip install -e ., or give "
            "the path of a checkpoint"
        )
    if name not in names:
        raise ValueError(
            f"{name!r} is neither a checkpoint file nor the name of a shipped agent; known names: {', '.join(names)}"
        )
    return folder / f"{name}.pt"


def resolve_checkpoint(checkpoint: str | os.PathLike, folder: Path = CHECKPOINT_DIR) -> str | os.PathLike:
    """What :func:`agents.load_agent` reads for ``checkpoint``: the shipped agent's file for a string that is a
    bare name and not an existing path (see the module docstring), else ``checkpoint`` itself, unchanged (a
    missing path is then reported as missing by the reader)."""
    if isinstance(checkpoint, str) and is_agent_name(checkpoint) and not os.path.exists(checkpoint):
        return pretrained_path(checkpoint, folder)
    return checkpoint
