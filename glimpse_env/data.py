"""MNIST digits for the environments: where they come from, checking them, and sharing them in a process.

Source, in order: an explicit ``data_dir``, the ``GLIMPSE_MNIST_DIR`` environment variable, else torchvision's
download into a user cache folder. A source folder holds the four original ``.gz`` files (directly, or in
torchvision's ``MNIST/raw`` layout below it); it may be read-only and is never written to. Each file's MD5 is
checked against the values torchvision checks. The parsed tensors are cached (keyed by those MD5s) in the cache
folder, so later loads take a few tens of milliseconds, and shared by every env of the process.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from torchvision.datasets import MNIST
from torchvision.datasets.mnist import read_image_file, read_label_file
from torchvision.datasets.utils import calculate_md5

from glimpse_env.config import NUM_CLASSES, SPLITS, _check_choice, resolve_device
from glimpse_env.files import atomic_write

ENV_VAR = "GLIMPSE_MNIST_DIR"
CACHE_ENV_VAR = "GLIMPSE_MNIST_CACHE"
MNIST_MD5 = dict(MNIST.resources)  # file name -> MD5, as torchvision checks them
MNIST_TRAINING_DIGITS, MNIST_TEST_DIGITS = 60_000, 10_000
TRAIN_SIZE = 55_000  # the paper's split: the last 5,000 training digits are the validation set
# The digits of each split: the one home of these numbers (the trainer's and the evaluation's limits read them).
SPLIT_SIZES = dict(zip(SPLITS, (TRAIN_SIZE, MNIST_TRAINING_DIGITS - TRAIN_SIZE, MNIST_TEST_DIGITS), strict=True))


@dataclass(frozen=True, eq=False)  # identity equality and hashing: a DigitSet can key a cache
class DigitSet:
    """Digits of one split: ``images`` (``N x 28 x 28`` uint8) and ``labels`` (``N`` int64), on one device."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        for name in ("images", "labels"):
            if not isinstance(getattr(self, name), torch.Tensor):
                raise ValueError(f"{name} must be a torch.Tensor, got {type(getattr(self, name)).__name__}")
        if self.images.dtype != torch.uint8 or self.images.dim() != 3 or self.images.shape[1:] != (28, 28):
            raise ValueError(f"images must be uint8 N x 28 x 28, got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape ({self.images.shape[0]},), got {tuple(self.labels.shape)}")
        if len(self) == 0:
            raise ValueError("a DigitSet needs at least one digit")
        # A label outside the classes would fail deep inside a reward's gather, or grade every answer wrong.
        if self.labels.is_floating_point() or self.labels.dtype == torch.bool or self.labels.is_complex():
            raise ValueError(f"labels must be integers, got {self.labels.dtype}")
        if int(self.labels.min()) < 0 or int(self.labels.max()) >= NUM_CLASSES:
            low, high = int(self.labels.min()), int(self.labels.max())
            raise ValueError(f"labels must lie in [0, {NUM_CLASSES - 1}], got values from {low} to {high}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> DigitSet:
        return DigitSet(self.images.to(device), self.labels.to(device).long())


def cache_dir() -> Path:
    """Where downloads and parsed tensors go: ``GLIMPSE_MNIST_CACHE``, else ``$XDG_CACHE_HOME/glimpse-mnist``."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "glimpse-mnist"


def _find_raw_folder(folder: Path) -> Path:
    """The folder that holds the ``.gz`` files: ``folder`` itself or torchvision's ``folder/MNIST/raw``."""
    for candidate in (folder, folder / "MNIST" / "raw"):
        if all((candidate / name).is_file() for name in MNIST_MD5):
            return candidate
    missing = [name for name in MNIST_MD5 if not (folder / name).is_file()]
    raise FileNotFoundError(
        f"MNIST folder {folder} lacks {', '.join(missing)}. It must hold the four original files "
        f"({', '.join(MNIST_MD5)}), directly or in MNIST/raw/ below it. Point {ENV_VAR} or data_dir at such a folder."
    )


def check_data_dir(data_dir: object) -> None:
    """A ``ValueError`` naming ``data_dir`` unless it is None, a ``str`` or an ``os.PathLike`` (not yet whether
    the folder exists: that is for :func:`resolve_raw_folder`, when it is read)."""
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise ValueError(
            f"data_dir must be None or a folder path (str or os.PathLike) holding {', '.join(MNIST_MD5)}; "
            f"got {type(data_dir).__name__} {data_dir!r}"
        )


def resolve_raw_folder(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder of ``.gz`` files to read: ``data_dir``, else ``$GLIMPSE_MNIST_DIR``, else a download."""
    check_data_dir(data_dir)
    if data_dir is not None:
        return _find_raw_folder(Path(data_dir).expanduser())
    if os.environ.get(ENV_VAR):
        return _find_raw_folder(Path(os.environ[ENV_VAR]).expanduser())
    root = cache_dir()
    try:
        return _find_raw_folder(root)
    except FileNotFoundError:
        pass
    try:
        MNIST(root=str(root), download=True)  # torchvision downloads into root/MNIST/raw and checks MD5s
    except Exception as error:  # no network, no mirror, no disk: say what would work instead
        raise RuntimeError(
            f"MNIST is not available: no data_dir was given, {ENV_VAR} is not set, and torchvision could not "
            f"download it into {root} ({error}). Set {ENV_VAR} to a folder holding {', '.join(MNIST_MD5)}."
        ) from error
    return _find_raw_folder(root)


def _verify(raw: Path) -> dict[str, str]:
    checksums = {}
    for name, expected in MNIST_MD5.items():
        actual = calculate_md5(str(raw / name))
        if actual != expected:
            raise ValueError(
                f"MNIST file {raw / name} is corrupted or not the original: MD5 {actual}, expected {expected}. "
                "Replace it with the original file (the folder was not modified)."
            )
        checksums[name] = actual
    return checksums


def _parse(raw: Path) -> dict[str, torch.Tensor]:
    """Decompress into a temporary folder (the source may be read-only) and parse with torchvision's reader."""
    readers = {"images": read_image_file, "labels": read_label_file}
    tensors = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in MNIST_MD5:
            part = "train" if name.startswith("train") else "test"
            kind = "images" if "images" in name else "labels"
            target = Path(tmp) / name.removesuffix(".gz")
            with gzip.open(raw / name, "rb") as source:
                target.write_bytes(source.read())
            tensors[f"{part}_{kind}"] = readers[kind](str(target))
    return tensors


def _save_atomically(tensors: dict[str, torch.Tensor], path: Path) -> None:
    try:
        atomic_write(path, lambda file: torch.save(tensors, file))
    except OSError:
        pass  # an unwritable cache only costs a re-parse next time


@lru_cache(maxsize=4)
def _load_raw_folder(raw: Path) -> dict[str, torch.Tensor]:
    checksums = _verify(raw)
    key = hashlib.md5("".join(checksums[name] for name in sorted(checksums)).encode()).hexdigest()
    cached = cache_dir() / f"mnist-{key[:16]}.pt"
    if cached.is_file():
        try:
            return torch.load(cached, weights_only=True)
        except Exception:
            pass  # a damaged cache file is rebuilt below
    tensors = _parse(raw)
    _save_atomically(tensors, cached)
    return tensors


@lru_cache(maxsize=16)
def _split_on_device(raw: Path, split: str, device: str) -> DigitSet:
    tensors = _load_raw_folder(raw)
    part = {"train": slice(0, TRAIN_SIZE), "validation": slice(TRAIN_SIZE, None), "test": slice(None)}[split]
    prefix = "test" if split == "test" else "train"
    return DigitSet(tensors[f"{prefix}_images"][part], tensors[f"{prefix}_labels"][part].long()).to(device)


def load_digits(
    split: str, data_dir: str | os.PathLike | None = None, device: torch.device | str = "cpu"
) -> DigitSet:
    """The digits of ``split`` (``"train"``, ``"validation"`` or ``"test"``) on ``device``.

    One copy per (source, split, device) is shared by every env of the process.
    """
    _check_choice("split", split, SPLITS)
    device = str(resolve_device(device))  # checked before any folder is looked at, let alone a download started
    return _split_on_device(resolve_raw_folder(data_dir).resolve(), split, device)
