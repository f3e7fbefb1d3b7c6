"""The MNIST data layer: where digits come from, MD5 checks, clear errors, one shared copy per process."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from glimpse_env import data
from glimpse_env.data import CACHE_ENV_VAR, ENV_VAR, MNIST_MD5, load_digits, resolve_raw_folder

# The published label histograms of the MNIST test file and of the whole training file.
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
TRAIN_FILE_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def link_files(source: Path, target: Path, names: list[str] | None = None) -> Path:
    """Symlinks in ``target`` to MNIST files of ``source`` (no copy, and the source is never written)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names if names is not None else list(MNIST_MD5):
        (target / name).symlink_to(source / name)
    return target


def raw_of(mnist_dir: Path) -> Path:
    """The folder holding the ``.gz`` files: ``mnist_dir`` itself or its torchvision ``MNIST/raw``."""
    return mnist_dir if (mnist_dir / "t10k-images-idx3-ubyte.gz").is_file() else mnist_dir / "MNIST" / "raw"


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file of ``folder`` with its MD5 and modification time, to show that nothing was written there."""
    return {
        path.name: (hashlib.md5(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        for path in sorted(folder.iterdir())
    }


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache folder, no ``GLIMPSE_MNIST_DIR``, and fresh in-process caches."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV_VAR, str(cache))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    return cache


# --- source resolution
def test_explicit_data_dir_wins_over_the_environment_variable(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))  # an empty folder: would fail if it were used
    assert resolve_raw_folder(mnist_dir) == mnist_dir
    monkeypatch.setenv(ENV_VAR, str(mnist_dir))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError):
        resolve_raw_folder(empty)  # the explicit folder is used even though the variable points at good data


def test_environment_variable_is_used_without_data_dir(
    mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(mnist_dir))
    assert resolve_raw_folder() == mnist_dir


def test_torchvision_layout_below_a_folder_is_accepted(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = link_files(raw_of(mnist_dir), tmp_path / "MNIST" / "raw")
    assert resolve_raw_folder(tmp_path) == raw
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert resolve_raw_folder() == raw


def test_download_goes_into_the_cache_folder(
    mnist_dir: Path, isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake_mnist(root: str, download: bool) -> None:  # what torchvision leaves behind: root/MNIST/raw/*.gz
        calls.append((root, download))
        link_files(raw_of(mnist_dir), Path(root) / "MNIST" / "raw")

    monkeypatch.setattr(data, "MNIST", fake_mnist)
    assert resolve_raw_folder() == isolated_cache / "MNIST" / "raw"
    assert calls == [(str(isolated_cache), True)]
    assert resolve_raw_folder() == isolated_cache / "MNIST" / "raw"
    assert len(calls) == 1  # a finished download is found again without downloading


@pytest.mark.parametrize("through", ["data_dir", "environment"])
def test_missing_files_name_the_variable_and_the_missing_files(
    mnist_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, through: str
) -> None:
    present = ["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    missing = [name for name in MNIST_MD5 if name not in present]
    folder = link_files(raw_of(mnist_dir), tmp_path / "partial", present)
    monkeypatch.setenv(ENV_VAR, str(folder))
    with pytest.raises(FileNotFoundError) as raised:
        if through == "data_dir":
            load_digits("test", data_dir=folder)
        else:
            load_digits("test")
    message = str(raised.value)
    assert ENV_VAR in message
    for name in missing:
        assert name in message
    assert f"lacks {', '.join(missing)}." in message  # the files present are not reported missing


def test_offline_with_nothing_configured_is_a_clear_runtime_error(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(self: object) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(data.MNIST, "download", no_network)
    with pytest.raises(RuntimeError) as raised:
        load_digits("train")
    message = str(raised.value)
    assert ENV_VAR in message
    assert "network is unreachable" in message
    for name in MNIST_MD5:
        assert name in message
    assert not list(isolated_cache.glob("**/*.gz"))


def test_corrupted_file_is_named_and_the_folder_is_left_untouched(
    mnist_dir: Path, isolated_cache: Path, tmp_path: Path
) -> None:
    raw = raw_of(mnist_dir)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in MNIST_MD5:
        shutil.copyfile(raw / name, copy / name)
    broken = copy / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(broken.read_bytes())
    content[len(content) // 2] ^= 0xFF
    broken.write_bytes(bytes(content))
    before = snapshot(copy)

    with pytest.raises(ValueError) as raised:
        load_digits("test", data_dir=copy)
    message = str(raised.value)
    assert "t10k-labels-idx1-ubyte.gz" in message
    assert MNIST_MD5["t10k-labels-idx1-ubyte.gz"] in message  # the expected MD5, so the user can check
    for other in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        assert other not in message
    assert snapshot(copy) == before
    assert not list(isolated_cache.glob("*.pt"))  # nothing parsed from a bad file was cached


# --- splits and sharing
def test_split_sizes_and_label_histograms(mnist_dir: Path) -> None:
    train = load_digits("train", data_dir=mnist_dir)
    validation = load_digits("validation", data_dir=mnist_dir)
    test = load_digits("test", data_dir=mnist_dir)
    assert (len(train), len(validation), len(test)) == (55_000, 5_000, 10_000)
    for digits in (train, validation, test):
        assert digits.images.dtype == torch.uint8 and digits.images.shape[1:] == (28, 28)
        assert digits.labels.dtype == torch.int64
    assert torch.bincount(test.labels, minlength=10).tolist() == TEST_LABEL_COUNTS
    both = torch.bincount(train.labels, minlength=10) + torch.bincount(validation.labels, minlength=10)
    assert both.tolist() == TRAIN_FILE_LABEL_COUNTS
    assert int(test.images.max()) == 255 and int(test.images.min()) == 0


def test_fixture_is_the_start_of_the_test_split(mnist_dir: Path, tiny_digits: data.DigitSet) -> None:
    test = load_digits("test", data_dir=mnist_dir)
    assert torch.equal(test.images[: len(tiny_digits)], tiny_digits.images)
    assert torch.equal(test.labels[: len(tiny_digits)], tiny_digits.labels)


def test_loading_twice_shares_the_same_tensors(mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_digits("test", data_dir=mnist_dir)
    monkeypatch.setenv(ENV_VAR, str(mnist_dir))
    second = load_digits("test")  # the same folder reached another way
    assert second is first
    assert second.images.data_ptr() == first.images.data_ptr()
    train = load_digits("train", data_dir=mnist_dir)
    validation = load_digits("validation", data_dir=mnist_dir)
    # The splits are views of one parsed training file, not copies.
    assert validation.images.data_ptr() == train.images.data_ptr() + 55_000 * 28 * 28


def test_cached_load_reads_the_parsed_tensors(
    mnist_dir: Path, isolated_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two folders of the same files: the in-process cache is keyed by folder, the on-disk cache by MD5s.
    source = link_files(raw_of(mnist_dir), tmp_path / "source")
    other = link_files(raw_of(mnist_dir), tmp_path / "other")
    before = snapshot(source)
    start = time.perf_counter()
    parsed = load_digits("test", data_dir=source)
    parse_seconds = time.perf_counter() - start
    cached_files = list(isolated_cache.glob("mnist-*.pt"))
    assert len(cached_files) == 1

    def must_not_parse(raw: Path) -> None:
        raise AssertionError("the cached tensors should have been used")

    monkeypatch.setattr(data, "_parse", must_not_parse)
    start = time.perf_counter()
    cached = load_digits("test", data_dir=other)
    cached_seconds = time.perf_counter() - start
    print(f"\nfirst load (MD5 + parse) {parse_seconds:.3f} s, cached load {cached_seconds:.3f} s")
    assert torch.equal(cached.images, parsed.images) and torch.equal(cached.labels, parsed.labels)
    assert snapshot(source) == before and sorted(os.listdir(source)) == sorted(MNIST_MD5)


def test_unknown_split_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="split"):
        load_digits("training")
