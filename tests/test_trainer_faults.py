"""The trainer's faults found in review (issue 18), each tried as a user would: a resumed weight-average run's best.pt,
a --train-subset smaller than a batch, torchrun's one thread per CPU rank, and two trainers on one run folder.
(The test of best.pt's noise under torchrun is in tests/test_distributed.py; recipes' precision in
tests/test_presets.py; bad command lines in tests/test_bad_command_lines.py.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_FLAGS

from agents import load_agent
from agents.checkpoint import read_checkpoint
from agents.training import cli, distributed, evaluation, run_folder
from agents.training.step import epoch_order

REPO = Path(__file__).resolve().parents[1]


def state(path: Path) -> dict:
    return read_checkpoint(path)["model"]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- 1. a resumed --ema-decay run's best.pt


def test_a_resumed_average_run_killed_before_best_pt_keeps_the_average_and_its_noise(mnist_dir, tmp_path,
                                                                                     monkeypatch):
    """Killed after the last epoch's last.pt and before its best.pt, in an epoch that improved validation: the
    resume must write best.pt from last.pt's weight average with that epoch's location noise (it wrote the live
    weights with the first epoch's noise), and the test must use them."""
    # Validation scripted to improve every epoch (the annealed noise falls: 0.3, then 0.05).
    monkeypatch.setattr(evaluation, "validate", lambda model, *args, **kwargs: {"error": model.config.loc_std})
    flags = [*TINY_FLAGS, "--epochs", "2", "--test-mc", "2", "--ema-decay", "0.9", "--loc-std", "0.3",
             "--loc-std-final", "0.05"]
    straight = cli.main([*flags, "--run-dir", str(tmp_path / "straight")])

    real_save = run_folder.Run.save

    def save(self, name, model, env_kwargs, extra):
        if name == "best.pt" and extra["metrics"]["epoch"] == 2:
            raise KeyboardInterrupt  # last.pt of epoch 2 is written, best.pt not yet
        real_save(self, name, model, env_kwargs, extra)

    monkeypatch.setattr(run_folder.Run, "save", save)
    with pytest.raises(KeyboardInterrupt):
        cli.main([*flags, "--run-dir", str(tmp_path / "stopped")])
    monkeypatch.setattr(run_folder.Run, "save", real_save)
    assert read_checkpoint(tmp_path / "stopped" / "best.pt")["extra"]["metrics"]["epoch"] == 1

    tested = []
    real_evaluate_checkpoint = evaluation.evaluate_checkpoint

    def evaluate_checkpoint(path, *args, **kwargs):
        tested.append(load_agent(path).model.config.loc_std)
        return real_evaluate_checkpoint(path, *args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate_checkpoint", evaluate_checkpoint)
    resumed = cli.main(["--resume", str(tmp_path / "stopped")])
    written, expected = (read_checkpoint(tmp_path / run / "best.pt") for run in ("stopped", "straight"))
    average = read_checkpoint(tmp_path / "stopped" / "last.pt")["extra"]["average"]
    assert written["extra"]["metrics"]["epoch"] == 2
    assert same(written["model"], {k.removeprefix("module."): v for k, v in average.items() if k != "n_averaged"})
    assert same(written["model"], expected["model"])  # the average, not the live weights
    assert written["model_config"] == expected["model_config"]  # with epoch 2's noise
    assert written["model_config"]["loc_std"] == pytest.approx(0.05)
    assert tested == [pytest.approx(0.05)]
    assert resumed["test"] == {**straight["test"], "seconds": resumed["test"]["seconds"]}


# ---------------------------------------------------------------- 3. a training subset smaller than a batch


def test_a_training_subset_smaller_than_half_a_batch_trains(mnist_dir, tmp_path):
    """--train-subset 5 with batches of 32: the last (only) batch is filled by repeating the order (it was padded
    with order[:pad], too short, and the step crashed)."""
    order = epoch_order(5, 32, torch.Generator().manual_seed(0))
    assert len(order) == 32 and sorted(set(order.tolist())) == [0, 1, 2, 3, 4]
    assert {order.tolist().count(i) for i in range(5)} <= {6, 7}  # each image as often as the others, within one
    assert torch.equal(epoch_order(40, 64, torch.Generator().manual_seed(0))[:40],
                       torch.randperm(40, generator=torch.Generator().manual_seed(0)))
    results = cli.main([*TINY_FLAGS, "--train-subset", "5", "--epochs", "1", "--run-dir", str(tmp_path / "run")])
    assert 0.0 <= results["test"]["error"] <= 1.0


# ---------------------------------------------------------------- 4. threads of torchrun's CPU ranks


@pytest.fixture
def fake_rank(monkeypatch):
    """init_distributed as rank 0 of 2 on an 8-core machine, no process group made; the threads it sets."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(distributed, "available_cores", lambda: 8)
    monkeypatch.setattr(distributed.torch_dist, "init_process_group", lambda *args, **kwargs: None)
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: False)
    threads = []
    monkeypatch.setattr(distributed.torch, "set_num_threads", threads.append)
    return threads


@pytest.mark.parametrize("omp, launcher, flag, expected", [
    ("1", {}, None, [4]),  # torchrun's own OMP_NUM_THREADS=1 (it was not in the environment torchrun started with)
    (None, {}, None, [4]),  # not set at all (one process a node: torchrun leaves it)
    ("1", {"OMP_NUM_THREADS": "1"}, None, []),  # the user's 1: it stands
    ("3", {"OMP_NUM_THREADS": "3"}, None, []),  # the user's 3: it stands
    ("1", None, None, [4]),  # the launcher's environment cannot be read: 1 is taken for torchrun's
    ("2", None, None, []),  # ... and any other value for the user's
    ("1", {"OMP_NUM_THREADS": "1"}, 3, [3]),  # --threads decides
], ids=["torchrun-default", "unset", "user-1", "user-3", "unreadable-1", "unreadable-2", "flag"])
def test_torchrun_cpu_ranks_share_the_cores(fake_rank, monkeypatch, omp, launcher, flag, expected):
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    monkeypatch.setattr(distributed, "launcher_environment", lambda: launcher)
    dist = distributed.init_distributed(1.0, threads=flag)
    assert (dist.world_size, dist.local_world_size) == (2, 2)
    assert fake_rank == expected


@pytest.mark.slow
def test_the_launchers_environment_is_read_as_it_started(tmp_path):
    """What tells torchrun's OMP_NUM_THREADS from a user's: the environment the parent process was started with."""
    probe = "from agents.training.distributed import launcher_environment as e; print('MARK' in (e() or {}))"
    env = {k: v for k, v in os.environ.items() if k != "MARK"}
    for marked in (True, False):
        shell_env = {**env, "MARK": "1"} if marked else env
        out = subprocess.run(["sh", "-c", f'{sys.executable} -c "{probe}"; true'], env=shell_env, cwd=REPO,
                             capture_output=True, text=True).stdout.strip()
        if Path("/proc/self/environ").exists():
            assert out == str(marked)


# ---------------------------------------------------------------- 6. two trainers on one run folder


def trainer(folder: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "train/ram_agent.py", *flags, "--run-dir", str(folder)], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_first_epoch(process: subprocess.Popen, folder: Path) -> None:
    deadline = time.monotonic() + 300
    while not ((folder / "metrics.jsonl").is_file() and (folder / "metrics.jsonl").read_text()):
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_second_trainer_on_a_live_run_folder_is_refused_naming_the_first(mnist_dir, tmp_path, refused):
    folder = tmp_path / "run"
    first = trainer(folder, *TINY_FLAGS, "--train-subset", "1024", "--epochs", "6")
    try:
        wait_for_first_epoch(first, folder)
        holder = f"pid {first.pid} on {socket.gethostname()}"
        for argv in (["--resume", str(folder)], [*TINY_FLAGS, "--run-dir", str(folder)]):
            refused(cli.main, argv, f"{folder} is in use by another trainer \\({holder}, since ")
        assert first.wait(timeout=600) == 0, first.stderr.read()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4, 5, 6]  # one line an epoch: the second trainer wrote none
    assert not (folder / ".lock").exists()  # released by a trainer that ended


def test_a_lock_left_by_a_killed_trainer_does_not_block_resume(mnist_dir, tmp_path):
    folder = tmp_path / "run"
    first = trainer(folder, *TINY_FLAGS, "--epochs", "3")
    wait_for_first_epoch(first, folder)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert f"pid {first.pid}" in (folder / ".lock").read_text()  # left behind, naming a dead trainer
    results = cli.main(["--resume", str(folder)])
    assert results["epochs"] == 3 and not (folder / ".lock").exists()
