"""The trainer loses nothing and refuses what it cannot do (issue 11): kills at any moment, resume with every random
stream, a NaN step, a full disk, an existing run folder, a finished run, and evaluation with few slots."""

from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_FLAGS

from agents import RAMConfig, RecurrentAttentionModel, load_agent, save_agent
from agents.training import cli, evaluation, run_folder, step

REPO = Path(__file__).resolve().parents[1]
# TINY_FLAGS (tests/conftest.py): 8 steps an epoch, an epoch is a fraction of a second.
EPOCHS = 3
TIMINGS = {"epoch_seconds", "train_episodes_per_second", "wall_seconds"}


def train(folder: Path, *flags: str) -> dict:
    return cli.main([*TINY_FLAGS, "--run-dir", str(folder), "--epochs", str(EPOCHS), *flags])


def strict_json(text: str):
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def metrics(folder: Path) -> list[dict]:
    """metrics.jsonl as strict JSON, without the timing fields."""
    rows = [strict_json(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_agent(a).model.state_dict(), load_agent(b).model.state_dict()
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def straight(mnist_dir, tmp_path_factory) -> Path:
    """An uninterrupted run: what every interrupted one must reproduce bit for bit."""
    folder = tmp_path_factory.mktemp("straight") / "run"
    train(folder)
    return folder


# ---------------------------------------------------------------- random streams


def draws(order: torch.Generator, env: torch.Generator) -> list[torch.Tensor]:
    return [torch.rand(3), torch.rand(3, generator=order), torch.rand(3, generator=env)]


def test_rng_states_round_trip_through_a_checkpoint(tmp_path):
    order, env = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    torch.manual_seed(3)
    torch.save(run_folder.rng_states(torch.device("cpu"), order, env), tmp_path / "states.pt")
    first = draws(order, env)
    states = torch.load(tmp_path / "states.pt", weights_only=True)
    assert "cuda_rng" not in states  # a CPU run draws from no CUDA generator
    run_folder.restore_rng_states(states, torch.device("cpu"), order, env)
    assert all(torch.equal(a, b) for a, b in zip(first, draws(order, env), strict=True))


class CudaLikeGenerator:
    """A CPU generator that, like a CUDA one, lives on "cuda" and takes its state only as a CPU ByteTensor."""

    device = torch.device("cuda")

    def __init__(self) -> None:
        self.inner = torch.Generator().manual_seed(5)

    def get_state(self) -> torch.Tensor:
        return self.inner.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        if state.device.type != "cpu" or state.dtype != torch.uint8:
            raise TypeError("RNG state must be a torch.ByteTensor")
        self.inner.set_state(state)


def test_rng_states_of_a_cuda_run_are_saved_and_restored(monkeypatch):
    """On CUDA, sampled locations draw from the device's global generator: it is saved and set back; the env's
    generator (on the device too) gets its state as a CPU ByteTensor (the old `.to(device)` failed there)."""
    cuda_state = {"state": torch.arange(16, dtype=torch.uint8)}
    set_calls = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": cuda_state["state"].clone())
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": set_calls.append((state, device)))
    device, order, env = torch.device("cuda"), torch.Generator().manual_seed(1), CudaLikeGenerator()
    states = run_folder.rng_states(device, order, env)
    assert torch.equal(states["cuda_rng"], cuda_state["state"])
    env_draw = torch.rand(4, generator=env.inner)
    run_folder.restore_rng_states(states, device, order, env)
    assert torch.equal(torch.rand(4, generator=env.inner), env_draw)
    (state, where), = set_calls
    assert torch.equal(state, cuda_state["state"]) and state.device.type == "cpu" and where == device


def test_a_cpu_run_resumed_on_another_kind_of_device_goes_on(capsys):
    order, env = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    states = {**run_folder.rng_states(torch.device("cpu"), order, env), "env_rng": torch.zeros(16, dtype=torch.uint8)}
    run_folder.restore_rng_states(states, torch.device("cpu"), order, env)  # a CUDA generator's 16-byte state
    assert "another kind of device" in capsys.readouterr().out


# ---------------------------------------------------------------- determinism


def test_same_seed_same_run_other_seed_another(straight, tmp_path):
    train(tmp_path / "again")
    assert metrics(tmp_path / "again") == metrics(straight)
    assert same_weights(tmp_path / "again" / "last.pt", straight / "last.pt")
    train(tmp_path / "other", "--seed", "1", "--epochs", "1")
    assert metrics(tmp_path / "other")[0] != metrics(straight)[0]
    assert not same_weights(tmp_path / "other" / "last.pt", straight / "last.pt")


def test_the_same_evaluation_twice_gives_the_same_numbers(straight):
    # Sampled first glimpses and Monte-Carlo paths: everything random in an evaluation comes from its seed.
    runs = [evaluation.evaluate_checkpoint(straight / "best.pt", "validation", 3, "cpu", 250, 0, None, 500)
            for _ in range(2)]
    assert {k: v for k, v in runs[0].items() if k != "seconds"} == {k: v for k, v in runs[1].items() if k != "seconds"}


# ---------------------------------------------------------------- run folders


def test_an_existing_run_folder_needs_resume(straight, tmp_path, refused):
    refused(cli.main, [*TINY_FLAGS, "--run-dir", str(straight), "--lr", "0.1"],
            "already holds a run: continue it with --resume")
    started = tmp_path / "started"  # killed before its first last.pt: config.json is there already
    started.mkdir()
    (started / "config.json").write_text((straight / "config.json").read_text())
    refused(cli.main, [*TINY_FLAGS, "--run-dir", str(started), "--epochs", "1"], "--resume")


def test_a_finished_run_is_not_tested_again(straight, tmp_path, monkeypatch, capsys, refused):
    folder = tmp_path / "run"
    train(folder, "--epochs", "1")
    before = {name: (folder / name).read_text() for name in ("results.json", "config.json", "command.txt")}

    def no_test(*args, **kwargs):
        raise AssertionError("a finished run was tested again")

    monkeypatch.setattr(evaluation, "evaluate_checkpoint", no_test)
    assert cli.main(["--resume", str(folder)]) == json.loads(before["results.json"])
    assert "is finished" in capsys.readouterr().out
    assert {name: (folder / name).read_text() for name in before} == before
    monkeypatch.undo()
    cli.main(["--resume", str(folder), "--epochs", "2"])  # trains on: epoch 2, then the test again
    assert "config.json: epochs 1 -> 2" in capsys.readouterr().out
    config = json.loads(before["config.json"])
    assert json.loads((folder / "config.json").read_text()) == {**config, "epochs": 2}
    assert (folder / "command.txt").read_text() == before["command.txt"]
    assert json.loads((folder / "results.json").read_text())["epochs"] == 2
    assert [row["epoch"] for row in metrics(folder)] == [1, 2]
    refused(cli.main, ["--resume", str(folder), "--epochs", "1"], "already trained 2 epochs")


def killed_in_validation(monkeypatch, folder: Path, epoch: int, *flags: str) -> None:
    """Train into ``folder`` until the validation of ``epoch``, stopped there (its outputs unwritten)."""
    calls = []

    def evaluate(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", evaluate)
    with pytest.raises(KeyboardInterrupt):
        train(folder, *flags)
    monkeypatch.setattr(evaluation, "evaluate", real)


def test_a_run_killed_before_its_first_epoch_keeps_its_config(mnist_dir, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    killed_in_validation(monkeypatch, folder, 1, "--epochs", "1")
    assert not (folder / "last.pt").exists()
    before = {name: (folder / name).read_text() for name in ("config.json", "command.txt")}
    cli.main(["--resume", str(folder), "--epochs", "2", "--eval-slots", "500"])
    assert (folder / "command.txt").read_text() == before["command.txt"]
    assert json.loads((folder / "config.json").read_text()) == {**json.loads(before["config.json"]), "epochs": 2}


# ---------------------------------------------------------------- one epoch's outputs land together


@pytest.mark.parametrize("killed_at", ["best.pt", "metrics.jsonl"])
def test_a_kill_between_an_epochs_writes_loses_and_repeats_nothing(straight, tmp_path, monkeypatch, killed_at):
    """last.pt commits an epoch; a kill after it, before best.pt or the metrics line, is made good on resume."""
    def save(self, name, *args):
        if name == killed_at == "best.pt" and args[2]["metrics"]["epoch"] == 2:
            raise KeyboardInterrupt
        real_save(self, name, *args)

    def log(self, row):
        if killed_at == "metrics.jsonl" and row["epoch"] == 2:
            raise KeyboardInterrupt
        real_log(self, row)

    real_save, real_log = run_folder.Run.save, run_folder.Run.log
    monkeypatch.setattr(run_folder.Run, "save", save)
    monkeypatch.setattr(run_folder.Run, "log", log)
    folder = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(folder)
    monkeypatch.undo()
    assert [row["epoch"] for row in metrics(folder)] == [1]  # epoch 2 is in last.pt only
    cli.main(["--resume", str(folder)])
    assert metrics(folder) == metrics(straight)
    assert same_weights(folder / "best.pt", straight / "best.pt")
    assert same_weights(folder / "last.pt", straight / "last.pt")


def test_a_run_of_the_previous_version_resumes_with_its_metrics_made_good(straight, tmp_path, monkeypatch):
    """The previous version wrote the metrics line before last.pt: a kill between them left a line of an epoch
    that last.pt lacks, which its resume then wrote again; its last.pt has no best_epoch, its config.json lacks
    the newer flag (ADDED_LATER supplies it)."""
    folder = tmp_path / "old"
    killed_in_validation(monkeypatch, folder, 3)  # then made to look as the previous version left it
    config = json.loads((folder / "config.json").read_text())
    del config["max_nonfinite_steps"]
    (folder / "config.json").write_text(json.dumps(config))
    payload = torch.load(folder / "last.pt", weights_only=True)
    del payload["extra"]["state"]["best_epoch"]
    torch.save(payload, folder / "last.pt")
    with (folder / "metrics.jsonl").open("a") as out:
        out.write(json.dumps({**metrics(folder)[-1], "epoch": 3}) + "\n" + '{"epoch": 4, "lo')  # and a torn line
    cli.main(["--resume", str(folder)])
    assert metrics(folder) == metrics(straight)
    assert same_weights(folder / "last.pt", straight / "last.pt")


# ---------------------------------------------------------------- non-finite steps


def nan_losses(monkeypatch, epochs: set[int]) -> None:
    """Every loss of ``epochs`` becomes NaN: by turns with finite gradients (a NaN added as a constant) and with
    NaN gradients."""
    calls = []

    def hybrid_loss(*args, **kwargs):
        loss = real(*args, **kwargs)
        calls.append(1)
        epoch = (len(calls) - 1) // 8 + 1  # 8 steps an epoch
        if epoch not in epochs:
            return loss
        nan = torch.tensor(float("nan"))
        total = loss.total + nan if len(calls) % 2 else loss.total * nan
        return loss._replace(total=total)

    real = step.hybrid_loss
    monkeypatch.setattr(step, "hybrid_loss", hybrid_loss)


def test_nonfinite_steps_are_skipped_and_counted(straight, tmp_path, monkeypatch):
    nan_losses(monkeypatch, {2})
    saved = {}

    def save(self, name, model, *args):
        if name == "last.pt":
            saved[args[1]["metrics"]["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}
        real_save(self, name, model, *args)

    real_save = run_folder.Run.save
    monkeypatch.setattr(run_folder.Run, "save", save)
    train(tmp_path / "run")
    rows = metrics(tmp_path / "run")  # strict JSON: the NaN loss of epoch 2 is written as null
    assert [row["nonfinite_steps"] for row in rows] == [0, 8, 0]
    assert rows[1]["loss"] is None and rows[0] == metrics(straight)[0]
    assert all(torch.equal(saved[1][k], saved[2][k]) for k in saved[1])  # no step reached the weights in epoch 2
    assert rows[2]["val_error"] != rows[1]["val_error"]  # and training went on in epoch 3


def test_too_many_nonfinite_steps_in_a_row_stop_the_run(mnist_dir, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    train(folder, "--epochs", "1")
    saved = (folder / "last.pt").read_bytes()
    nan_losses(monkeypatch, {1, 2})  # the resumed run's first epoch is epoch 2
    with pytest.raises(SystemExit, match=r"epoch 2, step 5/8: 5 steps in a row had a NaN or inf loss.*last.pt "
                                         r"\(epoch 1\) is intact"):
        cli.main(["--resume", str(folder), "--epochs", "2", "--max-nonfinite-steps", "5"])
    assert (folder / "last.pt").read_bytes() == saved
    assert [row["epoch"] for row in metrics(folder)] == [1]


# ---------------------------------------------------------------- a full disk, a read-only folder


def test_a_full_disk_while_checkpointing_is_a_clear_error(mnist_dir, tmp_path, monkeypatch):
    folder = tmp_path / "run"
    train(folder, "--epochs", "1")
    saved = (folder / "last.pt").read_bytes()

    def disk_full(payload, file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", disk_full)
    expected = f"could not write {re.escape(str(folder / 'last.pt'))}: No space left on device.*intact.*--resume"
    with pytest.raises(SystemExit, match=expected):
        cli.main(["--resume", str(folder), "--epochs", "2"])
    monkeypatch.undo()
    assert (folder / "last.pt").read_bytes() == saved
    (folder / "last.pt1234abcd.tmp").write_bytes(b"left by a kill during a write")
    cli.main(["--resume", str(folder), "--epochs", "2"])
    assert not list(folder.glob("*.tmp"))
    assert [row["epoch"] for row in metrics(folder)] == [1, 2]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_folder_is_a_clear_error(mnist_dir, tmp_path):
    folder = tmp_path / "run"
    train(folder, "--epochs", "1")
    folder.chmod(0o555)
    try:
        with pytest.raises(SystemExit, match=f"could not write {re.escape(str(folder))}"):
            cli.main(["--resume", str(folder), "--epochs", "2"])
    finally:
        folder.chmod(0o755)


# ---------------------------------------------------------------- evaluation with few slots


@pytest.fixture(scope="module")
def untrained(mnist_dir, tmp_path_factory) -> Path:
    """A checkpoint of an untrained agent that picks its first glimpse: its deterministic policy draws nothing."""
    path = tmp_path_factory.mktemp("untrained") / "agent.pt"
    torch.manual_seed(0)
    model = RecurrentAttentionModel(RAMConfig(learn_first_location=True))
    save_agent(path, model, dict(size=28, scales=1, glimpse_size=8, n_glimpses=3, clutter=0, first_location="random"))
    return path


def evaluate_json(capsys, *argv: str) -> dict:
    cli.evaluate_main([*argv, "--json", "--device", "cpu"])
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_evaluate_with_fewer_slots_than_mc_paths(untrained, capsys):
    few = evaluate_json(capsys, str(untrained), "--slots", "5", "--mc", "10", "--num-images", "20")
    many = evaluate_json(capsys, str(untrained), "--slots", "200", "--mc", "10", "--num-images", "20")
    assert few["num_images"] == 20 and 0 <= few["mc_error"] <= 1
    assert few["error"] == many["error"]  # the deterministic policy, whatever the batching


def test_training_with_fewer_eval_slots_than_test_paths_finishes(mnist_dir, tmp_path):
    # The full test split with 5 slots would take minutes; the first 20 images (--test-subset) take the same path.
    results = train(tmp_path / "run", "--epochs", "1", "--eval-slots", "5", "--test-mc", "10", "--val-subset", "20",
                    "--test-subset", "20")
    assert "mc_error" in results["test"] and results["test"]["num_images"] == results["test_images"] == 20
    assert json.loads((tmp_path / "run" / "results.json").read_text())["test"] == results["test"]


# ---------------------------------------------------------------- kill anywhere


def trainer(folder: Path, log) -> subprocess.Popen:
    """The trainer as its own process: a first start, or --resume once the run folder holds a config.json."""
    flags = ["--resume", str(folder)] if (folder / "config.json").is_file() else \
        [*TINY_FLAGS, "--run-dir", str(folder), "--epochs", str(EPOCHS)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread, as the tests' own (bit-identical results)
    return subprocess.Popen([sys.executable, "train/ram_agent.py", *flags], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=log)


def checkpoint_writes(folder: Path) -> set[str]:
    """The temporary files of checkpoint writes (last.pt or best.pt) in ``folder`` now."""
    try:
        return {name for name in os.listdir(folder) if name.endswith(".tmp") and ".pt" in name}
    except FileNotFoundError:
        return set()


def kill_anywhere(tmp_path: Path, kills: int, seed: int, first: str = "moment", reference: Path | None = None) -> None:
    """Train in a subprocess, SIGKILL it ``kills`` times and resume it each time; it must end as an uninterrupted
    run does, bit for bit. Kills land at a random moment of a run (from process start to the whole run's duration)
    or, every other one, in the middle of a checkpoint write (the n-th one the run makes); the first is ``first``
    ("moment" or "write"). A run that finishes before its kill is checked and a new one started. The uninterrupted
    run is ``reference`` when given (then no kill may be at a random moment: their range is its subprocess's time)."""
    chance = random.Random(seed)
    log = (tmp_path / "stderr.txt").open("w")
    started = time.perf_counter()
    if reference is None:
        reference = tmp_path / "reference"
        assert trainer(reference, log).wait() == 0
    else:
        assert kills == 1 and first == "write"
    duration = time.perf_counter() - started
    points, finished = [], []
    folder = tmp_path / "run0"
    while len(points) < kills:
        process = trainer(folder, log)
        if (len(points) + (first == "write")) % 2 == 0:
            moment = chance.uniform(0, duration)
            try:
                process.wait(timeout=moment)
            except subprocess.TimeoutExpired:
                process.kill()
                points.append(f"{moment:.2f}s")
        else:
            nth, seen, newest = chance.randint(1, EPOCHS + 1), set(), ""
            while process.poll() is None and len(seen) < nth:
                for name in checkpoint_writes(folder) - seen:
                    seen.add(name)
                    newest = name.split(".pt")[0] + ".pt"
                time.sleep(0.0005)
            if process.poll() is None:
                process.kill()
                points.append(f"writing {newest}")
        if process.wait() == 0:  # it finished before the kill
            finished.append(folder)
            folder = tmp_path / f"run{len(finished)}"
            continue
        assert process.returncode == -signal.SIGKILL, (tmp_path / "stderr.txt").read_text()[-2000:]
        if (folder / "last.pt").is_file():
            load_agent(folder / "last.pt")  # never torn
    assert trainer(folder, log).wait() == 0, (tmp_path / "stderr.txt").read_text()[-2000:]
    finished.append(folder)
    print(f"kill anywhere: {len(points)} kills ({', '.join(points)}) over {len(finished)} runs; "
          f"{time.perf_counter() - started:.1f}s in all")
    for folder in finished:
        assert metrics(folder) == metrics(reference)  # every epoch once, as the uninterrupted run recorded it
        assert same_weights(folder / "last.pt", reference / "last.pt")
        assert same_weights(folder / "best.pt", reference / "best.pt")
        results = [json.loads((run / "results.json").read_text())["test"] for run in (folder, reference)]
        assert {k: v for k, v in results[0].items() if k != "seconds"} == \
            {k: v for k, v in results[1].items() if k != "seconds"}
        assert not list(folder.glob("*.tmp"))


def test_kill_anywhere(straight, tmp_path):
    """The fast suite's one kill: in the middle of a checkpoint write, compared with the uninterrupted run trained in
    this process (the slow suite's battery kills 20 times)."""
    kill_anywhere(tmp_path, kills=1, seed=0, first="write", reference=straight)


@pytest.mark.slow
def test_kill_anywhere_many_times(mnist_dir, tmp_path):
    kill_anywhere(tmp_path, kills=20, seed=1)
