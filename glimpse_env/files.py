"""Writing files that must never be torn: the one atomic-write helper of the project (checkpoints, a run folder's
text files, the parsed-MNIST cache), and a file's SHA-256.

A public utility of ``glimpse_env`` (exported as ``glimpse_env.atomic_write``), not a private helper: the env's data
cache uses it, and so do the agents' checkpoints and run folders, which already depend on ``glimpse_env`` (its
config, its data) while ``glimpse_env`` knows nothing of ``agents``. It needs only the standard library.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Write a file atomically: ``write(file)`` fills a temporary file beside ``path`` (named ``<name>*.tmp``), which
    is flushed to disk, then renamed over ``path``. A kill or an error mid-write leaves ``path`` as it was (and the
    temporary file is removed on an error). The one way this project writes a file that must never be torn:
    checkpoints, and a run folder's text files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name, suffix=".tmp", delete=False) as tmp:
        try:
            write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            os.unlink(tmp.name)
            raise
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp.name, 0o666 & ~umask)  # as an ordinary file would be, not the temporary file's 0600
    os.replace(tmp.name, path)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as ``sha256sum`` prints it (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
