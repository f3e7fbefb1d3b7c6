"""Bad command lines of the trainer and of train/evaluate.py (issue 18, fault 8): each is refused as argparse
refuses, ``error: ...`` naming the flag and exit status 2, before anything is written (no half-made run folder that
would refuse the corrected retry); a traceback is for bugs only."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_FLAGS

from agents.training import cli

REPO = Path(__file__).resolve().parents[1]
NO_CUDA = not torch.cuda.is_available()

# (flags, what the message must say); each with TINY_FLAGS and a --run-dir that must not appear.
BAD_TRAINER_FLAGS = [
    (["--lr", "nan"], "argument --lr: must be a finite number"),
    (["--lr", "inf"], "argument --lr: must be a finite number"),
    (["--lr", "0"], "argument --lr: must be a finite number > 0"),
    (["--lr", "-0.001"], "argument --lr: must be a finite number > 0"),
    (["--lr", "fast"], "argument --lr: invalid float value"),
    (["--loc-std", "0"], "argument --loc-std: must be a finite number > 0"),
    (["--loc-std", "nan"], "argument --loc-std: must be a finite number"),
    (["--loc-std-final", "-0.1"], "argument --loc-std-final: must be a finite number >= 0"),
    (["--grad-clip", "-1"], "argument --grad-clip: must be a finite number >= 0"),
    (["--lr-final", "-1"], "argument --lr-final: must be a finite number >= 0"),
    (["--warmup-epochs", "-1"], "argument --warmup-epochs: must be a finite number >= 0"),
    (["--weight-decay", "-0.5"], "argument --weight-decay: must be a finite number >= 0"),
    (["--rl-weight", "-1"], "argument --rl-weight: must be a finite number >= 0"),
    (["--ema-decay", "1"], "argument --ema-decay: must be a finite number in"),
    (["--ema-decay", "inf"], "argument --ema-decay: must be a finite number"),
    (["--size", "20"], "argument --size: must be an integer >= 28"),
    (["--scales", "5"], "--scales.*largest scale"),
    (["--glimpse-size", "0"], "argument --glimpse-size: must be"),
    (["--glimpse-size", "100"], "argument --glimpse-size: must be"),
    (["--n-glimpses", "0"], "argument --n-glimpses: must be"),
    (["--clutter", "-1"], "argument --clutter: must be"),
    (["--what-hidden", "0"], "argument --what-hidden: must be"),
    (["--core-size", "0"], "argument --core-size: must be"),
    (["--core", "gru"], "argument --core: invalid choice"),
    (["--precision", "fp16"], "argument --precision: invalid choice"),
    (["--lr-schedule", "step"], "argument --lr-schedule: invalid choice"),
    (["--first-location", "corner"], "argument --first-location: invalid choice"),
    (["--preset", "mnist29-6g"], "argument --preset: invalid choice"),
    (["--recipe", "mnist29-6g"], "argument --recipe: invalid choice"),
    (["--device", "tpu"], "argument --device: tpu"),
    (["--seed", "-1"], r"argument --seed: must be an integer in \[0, 2\*\*64 - 1\], got -1"),
    (["--epochs", "0"], "argument --epochs: must be an integer >= 1"),
    (["--epochs", "1.5"], "argument --epochs: invalid int value"),
    (["--mc-samples", "0"], "argument --mc-samples: must be an integer >= 1"),
    (["--batch-size", "0"], "argument --batch-size: must be an integer >= 1"),
    (["--eval-slots", "0"], "argument --eval-slots: must be an integer >= 1"),
    (["--max-nonfinite-steps", "0"], "argument --max-nonfinite-steps: must be an integer >= 1"),
    (["--train-subset", "-1"], r"argument --train-subset: must be an integer in \[0, 55000\]"),
    (["--val-subset", "-1"], r"argument --val-subset: must be an integer in \[0, 5000\]"),
    (["--val-mc", "-1"], "argument --val-mc: must be an integer >= 0"),
    (["--threads", "0"], "argument --threads: must be an integer >= 1"),
    (["--init-from", "no/such/checkpoint.pt"], "argument --init-from: no/such/checkpoint.pt: .*does not exist"),
    (["--data-dir", "no/such/folder"], "argument --data-dir: no/such/folder"),
    # Issue 31: limits that were not checked (the split's size, the run's length, torch's seed range).
    (["--val-subset", "999999"], r"argument --val-subset: must be an integer in \[0, 5000\] \(the validation split"),
    (["--train-subset", "999999"], r"argument --train-subset: must be an integer in \[0, 55000\]"),
    (["--warmup-epochs", "100", "--epochs", "2"], r"argument --warmup-epochs: must be <= --epochs \(2\).*got 100"),
    (["--seed", "99999999999999999999"], r"argument --seed: must be an integer in \[0, 2\*\*64 - 1\]"),
    (["--seed", str(2**64)], r"argument --seed: must be an integer in \[0, 2\*\*64 - 1\]"),
    (["--test-subset", "-1"], r"argument --test-subset: must be an integer in \[0, 10000\]"),
    (["--test-subset", "10001"], r"argument --test-subset: must be an integer in \[0, 10000\] \(the test split"),
    (["--test-subset", "many"], "argument --test-subset: "),
]
if NO_CUDA:
    BAD_TRAINER_FLAGS.append((["--device", "cuda"], "argument --device: cuda: .*no CUDA GPU"))


@pytest.mark.parametrize("flags, message", BAD_TRAINER_FLAGS, ids=[" ".join(f) for f, _ in BAD_TRAINER_FLAGS])
def test_the_trainer_refuses_a_bad_flag_before_writing(mnist_dir, tmp_path, refused, flags, message):
    refused(cli.main, [*TINY_FLAGS, "--run-dir", str(tmp_path / "run"), *flags], message)
    assert not (tmp_path / "run").exists()


def snapshot(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())
            if path.is_file()}


@pytest.fixture(scope="module")
def finished_run(mnist_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("finished") / "run"
    cli.main([*TINY_FLAGS, "--epochs", "1", "--run-dir", str(folder)])
    return folder


def damaged_copy(run: Path, folder: Path, name: str, content: bytes) -> Path:
    folder.mkdir()
    for path in run.iterdir():
        if path.is_file() and path.name != "results.json":
            (folder / path.name).write_bytes(path.read_bytes())
    (folder / name).write_bytes(content)
    return folder


def test_a_damaged_init_from_is_refused_before_writing(finished_run, tmp_path, refused):
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((finished_run / "best.pt").read_bytes()[:5000])
    refused(cli.main, [*TINY_FLAGS, "--run-dir", str(tmp_path / "run"), "--init-from", str(damaged)],
            f"argument --init-from: {damaged}: .*truncated, damaged or not a torch checkpoint")
    assert not (tmp_path / "run").exists()
    refused(cli.main, [*TINY_FLAGS, "--run-dir", str(tmp_path / "run"), "--init-from",
                       str(finished_run / "config.json")],
            "argument --init-from: .*config.json")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, content, message", [
    ("config.json", b'{"epochs": 3, "lr": ', "argument --resume: .*config.json cannot be read"),
    ("config.json", b'{"epochs": 3, "learning_rate": 1}',
     "argument --resume: .*not a run configuration.*learning_rate"),
    ("config.json", b'{"epochs": 3, "lr": "fast"}', "argument --lr: must be float"),
    ("last.pt", b"PK\x03\x04 half a checkpoint", "argument --resume: .*last.pt cannot be continued from"),
], ids=["torn-config", "foreign-config", "bad-value-in-config", "damaged-last"])
def test_a_damaged_run_folder_is_refused_and_left_as_it_was(finished_run, tmp_path, refused, name, content,
                                                             message):
    folder = damaged_copy(finished_run, tmp_path / "run", name, content)
    before = snapshot(folder)
    refused(cli.main, ["--resume", str(folder), "--epochs", "2"], message)
    assert snapshot(folder) == before


def test_resume_of_a_folder_that_is_not_a_run(tmp_path, refused):
    refused(cli.main, ["--resume", str(tmp_path / "nothing")], "argument --resume: .*no config.json there")
    assert not (tmp_path / "nothing").exists()


# ---------------------------------------------------------------- train/evaluate.py


@pytest.fixture(scope="module")
def damaged_checkpoint(finished_run, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("damaged") / "best.pt"
    path.write_bytes((finished_run / "best.pt").read_bytes()[:-100])
    return path


BAD_EVALUATE_FLAGS = [
    (["--mc", "-1"], "argument --mc: must be an integer >= 0"),
    (["--slots", "0"], "argument --slots: must be an integer >= 1"),
    (["--num-images", "0"], "argument --num-images: must be an integer >= 1"),
    (["--num-images", "10001"], "argument --num-images: must be an integer in"),
    (["--seed", "-1"], "argument --seed: must be an integer in"),
    (["--split", "holdout"], "argument --split: invalid choice"),
    (["--device", "tpu"], "argument --device: tpu"),
    (["--data-dir", "no/such/folder"], "argument --data-dir: .*no/such/folder"),
    (["--seed", str(2**64)], r"argument --seed: must be an integer in \[0, 2\*\*64 - 1\]"),
]
if NO_CUDA:
    BAD_EVALUATE_FLAGS.append((["--device", "cuda"], "argument --device: cuda: .*no CUDA GPU"))


@pytest.mark.parametrize("flags, message", BAD_EVALUATE_FLAGS, ids=[" ".join(f) for f, _ in BAD_EVALUATE_FLAGS])
def test_evaluate_refuses_a_bad_flag(finished_run, refused, flags, message):
    refused(cli.evaluate_main, [str(finished_run / "best.pt"), *flags], message)


def test_evaluate_refuses_a_bad_checkpoint_before_evaluating_any(finished_run, damaged_checkpoint, refused,
                                                                 capsys):
    good = str(finished_run / "best.pt")
    refused(cli.evaluate_main, [good, str(damaged_checkpoint)], f"argument CHECKPOINT: {damaged_checkpoint}: .*")
    refused(cli.evaluate_main, [good, "no/such/best.pt"], "argument CHECKPOINT: no/such/best.pt: .*does not exist")
    refused(cli.evaluate_main, [good, "mnist29-6g"], "argument CHECKPOINT: mnist29-6g: .*known names: .*mnist28-6g")
    assert capsys.readouterr().out == ""  # nothing was evaluated, not even the good one


# ---------------------------------------------------------------- the scripts themselves


@pytest.mark.parametrize("script, argv, message", [
    ("train/ram_agent.py", [*TINY_FLAGS, "--lr", "nan"], "--lr: must be a finite number"),
    # Each starts a Python that imports torch: one in the fast suite, the others in the slow one.
    pytest.param("train/ram_agent.py", [*TINY_FLAGS, "--grad-clip", "-1"],
                 "argument --grad-clip: must be a finite number >= 0", marks=pytest.mark.slow),
    pytest.param("train/ram_agent.py", [*TINY_FLAGS, "--size", "20"], "argument --size: must be an integer >= 28",
                 marks=pytest.mark.slow),
    pytest.param("train/evaluate.py", ["no/such/best.pt"], "argument CHECKPOINT: no/such/best.pt",
                 marks=pytest.mark.slow),
    # Issue 31: a traceback from torch's seed overflow, after config.json and command.txt were written.
    pytest.param("train/ram_agent.py", [*TINY_FLAGS, "--seed", "99999999999999999999"],
                 "argument --seed: must be an integer in", marks=pytest.mark.slow),
], ids=["lr-nan", "grad-clip", "size", "evaluate-missing", "seed-too-large"])
def test_the_scripts_print_one_error_line_and_exit_2(mnist_dir, tmp_path, script, argv, message):
    folder = tmp_path / "run"
    argv = [*argv, "--run-dir", str(folder)] if script == "train/ram_agent.py" else argv
    done = subprocess.run([sys.executable, script, *argv], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2 and message in done.stderr and "error: " in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not folder.exists()
