"""Learning curves (agents.figures.curves; train/plot.py) from run folders, and the TensorBoard events a training
run writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agents.figures import curves as plot
from agents.figures.cli import plot_main


def write_run(folder: Path, preset: str | None, epochs: int = 5, hours: float = 0.5, repeat: int | None = None) -> Path:
    """A run folder as the trainer writes it: config.json and one metrics line per epoch (``repeat``: an epoch
    logged twice, the first time with a bogus error, as by a run stopped before saving it and then resumed)."""
    folder.mkdir(parents=True)
    if preset is not None:
        (folder / "config.json").write_text(json.dumps({"preset": preset, "epochs": epochs}))
    lines = []
    for epoch in range(1, epochs + 1):
        metrics = {"epoch": epoch, "loss": 1.0 / epoch, "reward": 1.0 - 0.5 / epoch, "val_error": 0.2 / epoch,
                   "lr": 1e-3 / epoch, "wall_seconds": hours * 3600 * epoch / epochs}
        if epoch == repeat:
            lines.append(json.dumps({**metrics, "val_error": 0.99}))
        lines.append(json.dumps(metrics))
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def line_data(axes) -> dict[str, np.ndarray]:
    """The y values of an axes' labelled lines, by label."""
    return {line.get_label(): np.asarray(line.get_ydata()) for line in axes.get_lines()
            if not line.get_label().startswith("_")}


def horizontal_lines(axes) -> list[tuple[float, str]]:
    """(y, line style) of the axes' unlabelled horizontal lines: the reference lines."""
    found = []
    for line in axes.get_lines():
        y = np.asarray(line.get_ydata(), dtype=float)
        if line.get_label().startswith("_") and len(y) == 2 and y[0] == y[1]:
            found.append((float(y[0]), line.get_linestyle()))
    return found


def test_curves_of_two_runs_with_the_paper_and_target_lines(tmp_path):
    ours = write_run(tmp_path / "mnist28-6g-long", "mnist28-6g")
    other = write_run(tmp_path / "custom", "not-a-paper-row", epochs=3)
    figure = plot.learning_curves([ours, other])
    by_epoch, by_time, reward, rate = figure.axes[:4]

    errors = line_data(by_epoch)
    assert set(errors) == {"mnist28-6g-long", "custom"}  # the legend names the run folders
    np.testing.assert_allclose(errors["mnist28-6g-long"], [20.0, 10.0, 20 / 3, 5.0, 4.0])  # percent
    np.testing.assert_allclose(line_data(reward)["custom"], [0.5, 0.75, 1 - 0.5 / 3])
    np.testing.assert_allclose(line_data(rate)["mnist28-6g-long"], [1e-3 / e for e in range(1, 6)])
    time_line = next(line for line in by_time.get_lines() if line.get_label() == "custom")
    np.testing.assert_allclose(time_line.get_xdata(), [10.0, 20.0, 30.0])  # half an hour: minutes
    assert "minutes" in by_time.get_xlabel()
    assert by_epoch.get_yscale() == "log"

    assert plot.REFERENCE_ERRORS["mnist28-6g"] == {"paper": 1.12, "target": 0.65}
    for axes in (by_epoch, by_time):  # only the paper row's references, dashed (paper) and dotted (target)
        assert sorted(horizontal_lines(axes)) == [(0.65, ":"), (1.12, "--")]
    legend = [text.get_text() for text in by_epoch.get_legend().get_texts()]
    assert legend[:2] == ["mnist28-6g-long", "custom"] and any("paper" in text for text in legend)


def test_plot_runs_writes_a_png_and_the_cli_defaults_into_the_run(tmp_path, capsys):
    run = write_run(tmp_path / "translated60-4g", "translated60-4g", hours=5.0)
    out = plot.plot_runs([run], tmp_path / "figures" / "curves.png")
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape == (900, 1300, 3) and image.std() > 20  # drawn, not blank
    assert "hours" in plot.learning_curves([run]).axes[1].get_xlabel()
    written = plot_main([str(run), "--linear"])
    assert written == run / "learning-curves.png" and written.is_file()
    assert str(written) in capsys.readouterr().out


def test_a_repeated_epoch_keeps_its_last_line(tmp_path):
    run = write_run(tmp_path / "resumed", None, repeat=3)
    epochs = plot.read_metrics(run)
    assert [epoch["epoch"] for epoch in epochs] == [1, 2, 3, 4, 5]
    assert epochs[2]["val_error"] == pytest.approx(0.2 / 3)
    assert horizontal_lines(plot.learning_curves([run]).axes[0]) == []  # no preset: no reference lines


def test_a_folder_without_metrics_is_named_in_the_error(tmp_path, capsys):
    run = write_run(tmp_path / "good", "mnist28-6g")
    empty = tmp_path / "not-a-run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="not-a-run.*no metrics.jsonl"):
        plot.plot_runs([run, empty], tmp_path / "out.png")
    with pytest.raises(SystemExit) as exited:
        plot_main([str(run), str(empty), "--out", str(tmp_path / "out.png")])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "argument RUN_DIR:" in err and "not-a-run" in err and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()


def test_a_training_run_writes_tensorboard_events_and_its_curves(mnist_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from test_train import run  # the training tests' quick run

    run(tmp_path, "tb", "--train-subset", "64", "--epochs", "1", "--batch-size", "16", "--mc-samples", "2",
        "--eval-slots", "5000", "--test-mc", "0")
    folder = tmp_path / "tb"
    events = list((folder / "tensorboard").glob("events.out.tfevents.*"))
    assert events
    logged = json.loads((folder / "metrics.jsonl").read_text().splitlines()[0])
    accumulator = EventAccumulator(str(folder / "tensorboard")).Reload()
    assert {"val_error", "reward", "lr", "loss"} <= set(accumulator.Tags()["scalars"])
    (scalar,) = accumulator.Scalars("val_error")
    assert scalar.step == 1 and scalar.value == pytest.approx(logged["val_error"])
    curves = plot.plot_runs([folder], folder / "learning-curves.png")
    assert Image.open(curves).size == (1300, 900)


def test_the_trainers_end_of_run_figures(mnist_dir, tmp_path, capsys):
    import torch

    from agents import RAMConfig, RecurrentAttentionModel, save_agent
    from agents.figures import draw_run_figures

    run = write_run(tmp_path / "run", "mnist28-6g")
    torch.manual_seed(0)
    config = RAMConfig(scales=1, glimpse_size=8, what_hidden=8, where_hidden=8, glimpse_out=16, core_size=16)
    save_agent(run / "best.pt", RecurrentAttentionModel(config), dict(size=28, n_glimpses=3))
    written = draw_run_figures(run, data_dir=str(mnist_dir))
    assert written == {"glimpses": run / "glimpse_paths-glimpses.png", "episode": run / "glimpse_paths-episode.gif",
                       "learning_curves": run / "learning-curves.png"}
    assert all(path.stat().st_size > 0 for path in written.values())
    assert f"glimpses: {run / 'glimpse_paths-glimpses.png'}" in capsys.readouterr().out

    (run / "best.pt").write_bytes(b"damaged")  # a figure that fails costs only that figure
    (run / "learning-curves.png").unlink()
    assert set(draw_run_figures(run, data_dir=str(mnist_dir))) == {"learning_curves"}
    assert "warning: the glimpse paths were not drawn (ValueError: checkpoint" in capsys.readouterr().err


def test_a_recipe_stage_is_named_with_its_recipe_folder(tmp_path):
    assert plot.run_label(tmp_path / "c100-recipe" / "stage3") == "c100-recipe/stage3"
    assert plot.run_label(tmp_path / "quick-start") == "quick-start"
    assert plot.run_label(tmp_path / "stages") == "stages"
