"""Learning curves of RAM training runs, read from their ``metrics.jsonl`` (``train/plot.py`` is the command line).

:func:`learning_curves` draws one figure (matplotlib's Agg backend: no display needed) of four panels, one line per
run (the legend names the run folder):

* validation error (percent, of the deterministic policy, measured after every epoch) against the epoch;
* the same against wall time (minutes, or hours for runs longer than two hours);
* the mean training reward (the fraction of sampled episodes answered right) against the epoch;
* the learning rate at the end of each epoch.

When a run's ``config.json`` names a ``preset`` that is a row of the paper's tables, both validation-error panels
carry that row's test error in Mnih et al. (2014) as a dashed line and this project's target for the
deterministic test error as a dotted line, in the run's colour. (Those are test errors; the curves are validation
errors, which the test error follows closely.)

A run folder that cannot be read (no ``metrics.jsonl``, a line that is not an epoch's JSON, a damaged
``config.json``) is a ``ValueError`` (``FileNotFoundError`` for a missing file) naming the file and the line.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator, NullFormatter

from agents.training.presets import REFERENCE_ERRORS

REFERENCE_STYLES = {"paper": ("--", "paper (Mnih et al. 2014, test)"), "target": (":", "target (deterministic test)")}
HOURS_FROM = 2 * 3600  # wall time in hours once a run is longer than this, else in minutes


def run_label(run_dir: str | os.PathLike) -> str:
    """A run's name in a legend: its folder's, with the recipe's folder before a stage's (``c60-recipe/stage2``)."""
    path = Path(run_dir).resolve()
    return f"{path.parent.name}/{path.name}" if re.fullmatch(r"stage\d+", path.name) else path.name


PLOTTED = ("val_error", "wall_seconds", "reward", "lr")  # the metrics drawn: each a number or null in a line


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The epochs of a run's ``metrics.jsonl``, in order; a repeated epoch (a run stopped between logging an epoch
    and saving it, then resumed) keeps its last line. A missing file is a ``FileNotFoundError``, an unreadable
    line a ``ValueError``, each naming the file (and the line)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not Path(run_dir).is_dir():
        kind = "is a file, not a run folder" if Path(run_dir).exists() else "does not exist"
        raise FileNotFoundError(f"run folder {run_dir} {kind}")
    if not path.is_file():
        raise FileNotFoundError(f"run folder {run_dir}: no metrics.jsonl there (is it a training run's folder?)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} cannot be read as text ({error})") from error
    by_epoch = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            metrics = _epoch_line(path, number, line)
            by_epoch[metrics["epoch"]] = metrics
    if not by_epoch:
        raise ValueError(f"run folder {run_dir}: metrics.jsonl has no epochs yet")
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def _epoch_line(path: Path, number: int, line: str) -> dict[str, Any]:
    """One line of ``metrics.jsonl``: a JSON object with an integer ``epoch`` and numbers (or null) to plot."""
    try:
        metrics = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}, line {number}: not JSON ({error})") from error
    if not isinstance(metrics, dict) or not _is_number(metrics.get("epoch"), integer=True):
        raise ValueError(f"{path}, line {number}: not an epoch's metrics (a JSON object with an integer 'epoch')")
    for key in PLOTTED:
        if metrics.get(key) is not None and not _is_number(metrics[key]):
            raise ValueError(f"{path}, line {number}: {key} must be a number or null, got {metrics[key]!r}")
    return metrics


def _is_number(value: object, integer: bool = False) -> bool:
    return not isinstance(value, bool) and isinstance(value, int if integer else (int, float))


def run_preset(run_dir: str | os.PathLike) -> str | None:
    """The ``preset`` of the run's ``config.json`` (None without one); a damaged file is a ``ValueError``."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is damaged: not a JSON file ({error})") from error
    preset = config.get("preset") if isinstance(config, dict) else None
    return preset if isinstance(preset, str) else None


def series(epochs: list[dict[str, Any]], x_key: str, y_key: str, scale: float = 1.0) -> tuple[list, list]:
    """``(x, y * scale)`` of the epochs that logged both keys (older runs lack some; an epoch whose every step was
    skipped as non-finite logs null)."""
    points = [(epoch[x_key], epoch[y_key] * scale) for epoch in epochs
              if epoch.get(x_key) is not None and epoch.get(y_key) is not None]
    return [x for x, _ in points], [y for _, y in points]


def learning_curves(run_dirs: Sequence[str | os.PathLike], log_error: bool = True) -> Figure:
    """The figure of the learning curves of ``run_dirs`` (see the module docstring).

    ``log_error``: validation error on a log axis (the default: the late epochs, near 1%, stay readable) or a
    linear one. Raises ``FileNotFoundError`` naming a folder without ``metrics.jsonl``, ``ValueError`` for a
    damaged one.
    """
    runs = [(Path(run_dir), read_metrics(run_dir), run_preset(run_dir)) for run_dir in run_dirs]
    if not runs:
        raise ValueError("plot_runs needs at least one run folder")
    longest = max(epoch.get("wall_seconds") or 0.0 for _, epochs, _ in runs for epoch in epochs)
    wall_unit, wall_scale = ("hours", 1 / 3600) if longest > HOURS_FROM else ("minutes", 1 / 60)

    figure = Figure(figsize=(13, 9), layout="constrained")
    FigureCanvasAgg(figure)
    (by_epoch, by_time), (reward, rate) = figure.subplots(2, 2)
    referenced: set[str] = set()
    styled: set[str] = set()
    for number, (run_dir, epochs, preset) in enumerate(runs):
        colour = f"C{number % 10}"
        name = run_label(run_dir)
        x, y = series(epochs, "epoch", "val_error", 100.0)
        by_epoch.plot(x, y, color=colour, label=name, marker="." if len(x) < 60 else None)
        seconds, y = series(epochs, "wall_seconds", "val_error", 100.0)
        by_time.plot([s * wall_scale for s in seconds], y, color=colour, label=name)
        reward.plot(*series(epochs, "epoch", "reward"), color=colour, label=name)
        rate.plot(*series(epochs, "epoch", "lr"), color=colour, label=name)
        if preset in REFERENCE_ERRORS and preset not in referenced:  # once per preset, however many runs share it
            referenced.add(preset)
            for kind, value in REFERENCE_ERRORS[preset].items():
                styled.add(kind)
                for axes in (by_epoch, by_time):
                    axes.axhline(value, color=colour, linestyle=REFERENCE_STYLES[kind][0], linewidth=1.2, alpha=0.8)
    _label_axes(by_epoch, by_time, reward, rate, wall_unit, log_error)

    handles, labels = by_epoch.get_legend_handles_labels()
    for kind in sorted(styled):  # grey samples of the reference line styles
        style, text = REFERENCE_STYLES[kind]
        handles.append(Line2D([], [], color="grey", linestyle=style))
        labels.append(text)
    by_epoch.legend(handles, labels, fontsize="small")
    reward.legend(fontsize="small", loc="lower right")
    return figure


def _label_axes(by_epoch: Axes, by_time: Axes, reward: Axes, rate: Axes, wall_unit: str, log_error: bool) -> None:
    """Scales, grids, titles and axis labels of the four panels."""
    for axes in (by_epoch, by_time):
        axes.set_yscale("log" if log_error else "linear")
        axes.set_ylabel("validation error (%)")
        axes.grid(True, which="both", alpha=0.3)
        if log_error:  # labels at 0.5, 1, 2, 5, 10, ... as plain numbers rather than powers of ten
            axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axes.yaxis.set_major_formatter("{x:g}")
            axes.yaxis.set_minor_formatter(NullFormatter())
    by_epoch.set(title="validation error", xlabel="epoch")
    by_time.set(title="validation error against wall time", xlabel=f"wall time ({wall_unit})")
    reward.set(title="training reward (fraction of sampled episodes right)", xlabel="epoch", ylabel="mean reward")
    reward.grid(True, alpha=0.3)
    rate.set(title="learning rate", xlabel="epoch", ylabel="learning rate", yscale="log")
    rate.grid(True, which="both", alpha=0.3)


def plot_runs(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike, log_error: bool = True) -> Path:
    """Draw the learning curves of ``run_dirs`` into the picture ``out`` (PNG, or another format matplotlib knows
    by the suffix; folders made as needed) and return ``out``. Everything is read before anything is written."""
    out = Path(out)
    figure = learning_curves(run_dirs, log_error)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    return out
