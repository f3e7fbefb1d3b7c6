"""Shared fixtures: a tiny committed MNIST sample (no network, no full data set) and the full-MNIST folder."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from glimpse_env.data import ENV_VAR, MNIST_MD5, DigitSet

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renders headless in tests
# Tests use small tensors: one intra-op thread is as fast, and far faster when other work keeps the cores busy
# (a second OpenMP thread then waits for a time slice at every op). GLIMPSE_TEST_THREADS overrides it.
torch.set_num_threads(int(os.environ.get("GLIMPSE_TEST_THREADS", "1")))

FIXTURE = Path(__file__).parent / "fixtures" / "mnist_test_300.npz"

# The tests' tiny training run (full MNIST, ``mnist_dir``): 256 training images in batches of 32 (8 steps an
# epoch), 3 glimpses, validation on the first 200 validation images and the final test on the first 500 test images
# (deterministic only), fp32 on the CPU, no figure. A test that needs more adds the flag again after these (the last
# one counts), e.g. ``[*TINY_FLAGS, "--train-subset", "1024"]``. Import it with ``from conftest import TINY_FLAGS``.
TINY_TEST_IMAGES = 500
TINY_FLAGS = ["--train-subset", "256", "--batch-size", "32", "--mc-samples", "2", "--n-glimpses", "3",
              "--eval-slots", "2500", "--val-subset", "200", "--test-subset", str(TINY_TEST_IMAGES), "--test-mc", "0",
              "--no-figure", "--precision", "fp32", "--device", "cpu"]
MISSING_MNIST = f"full MNIST not available: set {ENV_VAR} to a folder with the four original .gz files"


@pytest.fixture(scope="session")
def tiny_digits() -> DigitSet:
    """The first 300 MNIST test digits (``tests/fixtures/mnist_test_300.npz``) as a CPU ``DigitSet``."""
    with np.load(FIXTURE) as data:
        images = torch.from_numpy(data["images"].astype(np.uint8))
        labels = torch.from_numpy(data["labels"].astype(np.int64))
    return DigitSet(images, labels)


def _has_mnist(folder: Path) -> bool:
    return any(all((c / name).is_file() for name in MNIST_MD5) for c in (folder, folder / "MNIST" / "raw"))


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder named by ``GLIMPSE_MNIST_DIR``; skips the test when it is unset or lacks the four files."""
    value = os.environ.get(ENV_VAR)
    if not value or not _has_mnist(Path(value).expanduser()):
        pytest.skip(MISSING_MNIST)
    return Path(value).expanduser()


@pytest.fixture
def refused(capsys: pytest.CaptureFixture[str]) -> Callable[..., str]:
    """``refused(main, argv, pattern)``: ``main(argv)`` must refuse the command line as argparse does, exit status 2
    and ``error: ...`` on stderr matching ``pattern`` (a regex), without a traceback; returns stderr."""

    def check(main: Callable, argv: list[str], pattern: str) -> str:
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err
        assert stop.value.code == 2, f"exit status {stop.value.code}, stderr: {err}"
        assert "error: " in err and re.search(pattern, err, re.DOTALL), err
        assert "Traceback" not in err, err
        return err

    return check


# --- the bad-input battery (tests/test_bad_inputs.py) counts the distinct cases it tried and reports them
class BatteryCases(set):
    """Descriptions of the cases tried; a short repr, since hypothesis prints its arguments with a failure."""

    def __repr__(self) -> str:
        return f"<{len(self)} battery cases>"


BATTERY_CASES = pytest.StashKey[BatteryCases]()


@pytest.fixture(scope="session")
def battery_cases(request: pytest.FixtureRequest) -> BatteryCases:
    """A set that the battery's tests add a description of each case to; its size is printed after the run."""
    return request.config.stash.setdefault(BATTERY_CASES, BatteryCases())


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    cases = config.stash.get(BATTERY_CASES, None)
    if cases:
        terminalreporter.write_line(f"bad-input battery: {len(cases)} distinct cases tried")
