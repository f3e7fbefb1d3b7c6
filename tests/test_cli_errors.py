"""Bad command lines of ``train/visualize.py``, ``train/plot.py`` and ``python -m glimpse_env.play``: each is an
``error: argument FLAG: ...`` naming the flag at fault, exit status 2, no traceback, and nothing written.

One test per class of error (missing, damaged or unknown checkpoint; out-of-range or non-finite numbers; a bad
output path; a missing MNIST folder; flags that do not go together; damaged run folders), called in-process
through each command line's ``main``; a few more run the real scripts, to see what a user sees.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from agents import RAMConfig, RecurrentAttentionModel, save_agent
from agents.figures import cli as figures_cli
from agents.figures.cli import plot_main, visualize_main
from agents.pretrained import pretrained_names
from glimpse_env import play
from glimpse_env.config import ENV_ARGUMENTS, GlimpseConfig
from glimpse_env.env import GlimpseMNISTEnv
from glimpse_env.vector_env import GlimpseMNISTVectorEnv

ROOT = Path(__file__).resolve().parents[1]
TASK = dict(size=28, scales=1, glimpse_size=8, n_glimpses=2)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    config = RAMConfig(scales=1, glimpse_size=8, what_hidden=8, where_hidden=8, glimpse_out=16, core_size=16)
    save_agent(tmp_path / "agent.pt", RecurrentAttentionModel(config), TASK)
    return tmp_path / "agent.pt"


@pytest.fixture
def damaged(checkpoint: Path) -> Path:
    path = checkpoint.with_name("damaged.pt")
    path.write_bytes(checkpoint.read_bytes()[:4000])  # truncated, as by a copy cut short
    return path


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


def refused(capsys: pytest.CaptureFixture, main, argv: list[str], flag: str, *words: str, **kwargs) -> str:
    """Run ``main(argv)``: it must exit 2 with ``error: argument FLAG:`` (and ``words``) and no traceback."""
    with pytest.raises(SystemExit) as exited:
        main(argv, **kwargs)
    err = capsys.readouterr().err
    assert exited.value.code == 2, err
    assert f"error: argument {flag}:" in err, err
    assert "Traceback" not in err
    for word in words:
        assert word in err, err
    return err


def written(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


# ---------------------------------------------------------------------------------------------------- visualize
def test_visualize_refuses_a_missing_damaged_or_unknown_checkpoint(tiny_digits, checkpoint, damaged, tmp_path, capsys):
    out = tmp_path / "out"
    for bad, words in [
        (str(tmp_path / "missing.pt"), ["missing.pt", "does not exist"]),
        (str(damaged), ["damaged.pt", "truncated"]),
        ("cluttered60-9g", ["known names", *pretrained_names()[:1]]),
    ]:
        refused(capsys, visualize_main, [bad, "--out", str(out)], "CHECKPOINT", *words, digits=tiny_digits)
    assert written(out) == []


@pytest.mark.parametrize("argv, flag", [
    (["--rows", "0"], "--rows"),
    (["--rows", "-3"], "--rows"),
    (["--rows", "1000"], "--rows"),
    (["--rows", "1.5"], "--rows"),
    (["--seed", "-1"], "--seed"),
    (["--heatmap", "--num-images", "0"], "--num-images"),
    (["--heatmap", "--num-images", "301"], "--num-images"),  # the tiny split has 300 digits
    (["--num-images", "5"], "--num-images"),  # without --heatmap
    (["--name", "a/b"], "--name"),
])
def test_visualize_refuses_numbers_out_of_range_and_bad_names(tiny_digits, checkpoint, tmp_path, capsys, argv, flag):
    out = tmp_path / "out"
    refused(capsys, visualize_main, [str(checkpoint), "--out", str(out), *argv], flag, digits=tiny_digits)
    assert written(out) == []


def test_visualize_refuses_output_folders_it_cannot_write(tiny_digits, checkpoint, a_file, tmp_path, capsys):
    for out, words in [(a_file, ["not a folder"]), (a_file / "below", ["is a file"])]:
        refused(capsys, visualize_main, [str(checkpoint), "--out", str(out)], "--out", *words, digits=tiny_digits)
    (tmp_path / "out" / "agent-glimpses.png").mkdir(parents=True)  # a folder where a picture would go
    refused(capsys, visualize_main, [str(checkpoint), "--out", str(tmp_path / "out")], "--out", "is a folder",
            digits=tiny_digits)
    assert written(tmp_path / "out") == [tmp_path / "out" / "agent-glimpses.png"]


def test_visualize_refuses_a_missing_mnist_folder_and_video_without_moviepy(checkpoint, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    refused(capsys, visualize_main, [str(checkpoint), "--out", str(out), "--data-dir", str(tmp_path / "no-mnist")],
            "--data-dir", "no-mnist")
    monkeypatch.setattr(figures_cli, "video_available", lambda: False)
    refused(capsys, visualize_main, [str(checkpoint), "--out", str(out), "--video"], "--video", "moviepy")
    assert written(out) == []


# ---------------------------------------------------------------------------------------------------- plot
def write_run(folder: Path, lines: list[str], config: str | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if config is not None:
        (folder / "config.json").write_text(config)
    return folder


GOOD_LINE = json.dumps({"epoch": 1, "val_error": 0.1, "reward": 0.5, "lr": 1e-3, "wall_seconds": 60})


@pytest.mark.parametrize("lines, config, words", [
    (None, None, ["does not exist"]),
    ([GOOD_LINE, "{not json"], None, ["line 2", "not JSON"]),
    ([GOOD_LINE, "[1, 2]"], None, ["line 2", "integer 'epoch'"]),
    ([json.dumps({"val_error": 0.1})], None, ["line 1", "integer 'epoch'"]),
    ([json.dumps({"epoch": 1, "val_error": "low"})], None, ["val_error must be a number"]),
    ([GOOD_LINE], "{damaged", ["config.json is damaged"]),
])
def test_plot_refuses_missing_and_damaged_run_folders(tmp_path, capsys, lines, config, words):
    run = tmp_path / "run"
    if lines is not None:
        write_run(run, lines, config)
    out = tmp_path / "figures" / "curves.png"
    refused(capsys, plot_main, [str(run), "--out", str(out)], "RUN_DIR", *words)
    assert not out.parent.exists()


def test_plot_refuses_output_paths_it_cannot_write(tmp_path, a_file, capsys):
    run = write_run(tmp_path / "run", [GOOD_LINE])
    folder = tmp_path / "a-folder.png"
    folder.mkdir()
    for out, words in [
        (a_file / "curves.png", ["not a folder"]),
        (folder, ["is a folder"]),
        (tmp_path / "curves.txt", [".png", "curves.txt"]),
        (tmp_path / "no-suffix", ["must end in one of"]),
    ]:
        refused(capsys, plot_main, [str(run), "--out", str(out)], "--out", *words)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-file", "a-folder.png", "run"]


# ---------------------------------------------------------------------------------------------------- play
@pytest.mark.parametrize("argv, flag, words", [
    (["--size", "20"], "--size", [">= 28"]),
    (["--scales", "0"], "--scales", [">= 1"]),
    (["--scales", "4"], "--scales", ["twice the canvas"]),
    (["--glimpse-size", "100"], "--glimpse-size", ["<= size"]),
    (["--n-glimpses", "0"], "--n-glimpses", []),
    (["--clutter", "-1"], "--clutter", []),
    (["--seed", "-5"], "--seed", []),
    (["--seed", str(2**64)], "--seed", ["2**64 - 1"]),  # every seed's one bound (issue 31)
    (["--step-seconds", "nan"], "--step-seconds", ["finite"]),
    (["--step-seconds", "inf"], "--step-seconds", ["finite"]),
    (["--step-seconds", "0"], "--step-seconds", ["> 0"]),
    (["--autoplay"], "--autoplay", ["--agent"]),
])
def test_play_refuses_bad_numbers_and_flags_that_do_not_go_together(tiny_digits, capsys, argv, flag, words):
    refused(capsys, play.main, argv, flag, *words, digits=tiny_digits)


def test_play_refuses_a_missing_damaged_or_unknown_agent(tiny_digits, damaged, tmp_path, capsys):
    refused(capsys, play.main, ["--agent", str(tmp_path / "missing.pt")], "--agent", "does not exist",
            digits=tiny_digits)
    refused(capsys, play.main, ["--agent", str(damaged)], "--agent", "truncated", digits=tiny_digits)
    refused(capsys, play.main, ["--versus", "cluttered60-9g"], "--versus", "known names", digits=tiny_digits)


def test_play_refuses_a_missing_mnist_folder(tmp_path, capsys):
    refused(capsys, play.main, ["--data-dir", str(tmp_path / "no-mnist")], "--data-dir", "no-mnist")


def test_the_env_arguments_are_one_list_with_a_play_flag_each():
    assert ENV_ARGUMENTS == ("size", "scales", "glimpse_size", "n_glimpses", "clutter", "first_location")
    assert set(ENV_ARGUMENTS) == {name for name in GlimpseConfig.__dataclass_fields__} - {"split", "reward"}
    flags = {action.dest for action in play.build_parser()._actions}
    assert set(ENV_ARGUMENTS) <= flags


def test_every_home_of_the_env_arguments_is_made_from_glimpse_config(tiny_digits):
    """Issue 31: the env's arguments had five homes, and the checkpoint's keys disagreed about ``reward``."""
    from agents.checkpoint import ENV_KEYS
    from agents.training.config import CHOICES, TaskConfig

    env_fields = {f.name: f for f in fields(GlimpseConfig)}
    assert ENV_KEYS == set(ENV_ARGUMENTS)  # what a checkpoint may hold is what the trainer writes
    task = {f.name: f for f in fields(TaskConfig) if f.name != "preset"}
    assert tuple(task) == ENV_ARGUMENTS
    for name in ENV_ARGUMENTS:
        assert task[name].default == env_fields[name].default and task[name].type == env_fields[name].type
        assert task[name].metadata["help"] == env_fields[name].metadata["help"]
    assert CHOICES["first_location"] == list(env_fields["first_location"].metadata["choices"])
    play_flags = {action.dest: action for action in play.build_parser()._actions}
    for name in ENV_ARGUMENTS:
        assert f"(default {env_fields[name].default})" in play_flags[name].help
        assert play_flags[name].choices == env_fields[name].metadata["choices"]
    # Both envs take exactly GlimpseConfig's fields as the task's keywords, with its defaults.
    single, batched = GlimpseMNISTEnv(digits=tiny_digits), GlimpseMNISTVectorEnv(2, digits=tiny_digits)
    assert single.config == batched.config == GlimpseConfig()
    with pytest.raises(TypeError, match="sizes"):
        GlimpseMNISTVectorEnv(2, digits=tiny_digits, sizes=60)


# ---------------------------------------------------------------------------------------------------- as a user sees it
@pytest.mark.parametrize("command, flag", [
    # Each starts a Python that imports torch: in the slow suite (tests/test_bad_command_lines.py has the fast
    # one; the fast suite checks these scripts' flags in-process).
    pytest.param(["train/visualize.py", "cluttered60-9g", "--out", "{tmp}/out"], "CHECKPOINT", marks=pytest.mark.slow),
    pytest.param(["train/plot.py", "{tmp}/no-run", "--out", "{tmp}/out/curves.png"], "RUN_DIR",
                 marks=pytest.mark.slow),
    pytest.param(["-m", "glimpse_env.play", "--size", "20"], "--size", marks=pytest.mark.slow),
])
def test_the_scripts_print_one_error_line_and_exit_2(tmp_path, command, flag):
    argv = [part.replace("{tmp}", str(tmp_path)) for part in command]
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SDL_VIDEODRIVER": "dummy"})
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and f"error: argument {flag}:" in done.stderr.splitlines()[-1]
    assert done.stdout == "" and not (tmp_path / "out").exists()
