"""Learning curves of RAM training runs, read from their ``metrics.jsonl``.

    python train/plot.py assets/runs/mnist28-6g assets/runs/translated60-4g --out assets/learning-curves.png

draws one figure (PNG, matplotlib's Agg backend: no display needed) of four panels, one line per run (the legend
names the run folder):

* validation error (percent, of the deterministic policy, measured after every epoch) against the epoch;
* the same against wall time (minutes, or hours for runs longer than two hours);
* the mean training reward (the fraction of sampled episodes answered right) against the epoch;
* the learning rate at the end of each epoch.

When a run's ``config.json`` names a ``preset`` that is a row of the paper's tables, both validation-error panels
carry that row's test error in Mnih et al. (2014) as a dashed line and this project's target for the
deterministic test error as a dotted line, in the run's colour. (Those are test errors; the curves are validation
errors, which the test error follows closely.)

The trainer calls :func:`plot_runs` at the end of a run; with ``--out`` omitted the figure goes to
``RUN_DIR/learning-curves.png`` of the first run.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator, NullFormatter

# Test error in percent of each preset: "paper", Mnih et al. 2014 (NIPS), tables 1 and 2; "target", this project's
# goal for the deterministic policy. Rows the paper has but no target is set for carry only "paper".
REFERENCE_ERRORS: dict[str, dict[str, float]] = {
    "mnist28-4g": {"paper": 1.54},
    "mnist28-6g": {"paper": 1.12, "target": 0.65},
    "mnist28-7g": {"paper": 1.07},
    "translated60-4g": {"paper": 1.54, "target": 1.2},
    "translated60-6g": {"paper": 1.22, "target": 0.9},
    "translated60-8g": {"paper": 1.2},
    "cluttered60-8g": {"paper": 4.04, "target": 2.5},
    "cluttered100-8g": {"paper": 8.11, "target": 5.5},
}
REFERENCE_STYLES = {"paper": ("--", "paper (Mnih et al. 2014, test)"), "target": (":", "target (deterministic test)")}
HOURS_FROM = 2 * 3600  # wall time in hours once a run is longer than this, else in minutes


def read_metrics(run_dir: Path) -> list[dict[str, float]]:
    """The epochs of a run's ``metrics.jsonl``, in order; a repeated epoch (a run stopped between logging an epoch
    and saving it, then resumed) keeps its last line."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"run folder {run_dir}: no metrics.jsonl there (is it a training run's folder?)")
    by_epoch = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            metrics = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not JSON ({error})") from error
        by_epoch[metrics["epoch"]] = metrics
    if not by_epoch:
        raise ValueError(f"run folder {run_dir}: metrics.jsonl has no epochs yet")
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def run_preset(run_dir: Path) -> str | None:
    """The ``preset`` of the run's ``config.json`` (None without one)."""
    path = Path(run_dir) / "config.json"
    return json.loads(path.read_text()).get("preset") if path.is_file() else None


def series(epochs: list[dict[str, float]], x_key: str, y_key: str, scale: float = 1.0) -> tuple[list, list]:
    """``(x, y * scale)`` of the epochs that logged both keys (older runs lack some; an epoch whose every step was
    skipped as non-finite logs null)."""
    points = [(epoch[x_key], epoch[y_key] * scale) for epoch in epochs
              if epoch.get(x_key) is not None and epoch.get(y_key) is not None]
    return [x for x, _ in points], [y for _, y in points]


def learning_curves(run_dirs: Sequence[Path], log_error: bool = True) -> Figure:
    """The figure of the learning curves of ``run_dirs`` (see the module docstring).

    ``log_error``: validation error on a log axis (the default: the late epochs, near 1%, stay readable) or a
    linear one. Raises ``FileNotFoundError`` naming a folder without ``metrics.jsonl``.
    """
    runs = [(Path(run_dir), read_metrics(Path(run_dir))) for run_dir in run_dirs]
    if not runs:
        raise ValueError("plot_runs needs at least one run folder")
    longest = max(epoch.get("wall_seconds", 0.0) for _, epochs in runs for epoch in epochs)
    hours = longest > HOURS_FROM
    wall_unit, wall_scale = ("hours", 1 / 3600) if hours else ("minutes", 1 / 60)

    figure = Figure(figsize=(13, 9), layout="constrained")
    FigureCanvasAgg(figure)
    (by_epoch, by_time), (reward, rate) = figure.subplots(2, 2)
    referenced: set[str] = set()
    styled: set[str] = set()
    for number, (run_dir, epochs) in enumerate(runs):
        colour = f"C{number % 10}"
        name = run_dir.resolve().name
        x, y = series(epochs, "epoch", "val_error", 100.0)
        by_epoch.plot(x, y, color=colour, label=name, marker="." if len(x) < 60 else None)
        seconds, y = series(epochs, "wall_seconds", "val_error", 100.0)
        by_time.plot([s * wall_scale for s in seconds], y, color=colour, label=name)
        reward.plot(*series(epochs, "epoch", "reward"), color=colour, label=name)
        rate.plot(*series(epochs, "epoch", "lr"), color=colour, label=name)

        preset = run_preset(run_dir)
        if preset in REFERENCE_ERRORS and preset not in referenced:  # once per preset, however many runs share it
            referenced.add(preset)
            for kind, value in REFERENCE_ERRORS[preset].items():
                style, _ = REFERENCE_STYLES[kind]
                styled.add(kind)
                for axes in (by_epoch, by_time):
                    axes.axhline(value, color=colour, linestyle=style, linewidth=1.2, alpha=0.8)

    for axes in (by_epoch, by_time):
        axes.set_yscale("log" if log_error else "linear")
        axes.set_ylabel("validation error (%)")
        axes.grid(True, which="both", alpha=0.3)
        if log_error:  # labels at 0.5, 1, 2, 5, 10, ... as plain numbers rather than powers of ten
            axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axes.yaxis.set_major_formatter("{x:g}")
            axes.yaxis.set_minor_formatter(NullFormatter())
    by_epoch.set_title("validation error")
    by_epoch.set_xlabel("epoch")
    by_time.set_title("validation error against wall time")
    by_time.set_xlabel(f"wall time ({wall_unit})")
    reward.set_title("training reward (fraction of sampled episodes right)")
    reward.set_xlabel("epoch")
    reward.set_ylabel("mean reward")
    reward.grid(True, alpha=0.3)
    rate.set_title("learning rate")
    rate.set_xlabel("epoch")
    rate.set_ylabel("learning rate")
    rate.set_yscale("log")
    rate.grid(True, which="both", alpha=0.3)

    handles, labels = by_epoch.get_legend_handles_labels()
    for kind in sorted(styled):  # grey samples of the reference line styles
        style, text = REFERENCE_STYLES[kind]
        handles.append(Line2D([], [], color="grey", linestyle=style))
        labels.append(text)
    by_epoch.legend(handles, labels, fontsize="small")
    reward.legend(fontsize="small", loc="lower right")
    return figure


def plot_runs(run_dirs: Sequence[Path], out: Path, log_error: bool = True) -> Path:
    """Draw the learning curves of ``run_dirs`` into the PNG ``out`` (folders made as needed); returns ``out``.
    The trainer calls ``plot_runs([run_dir], run_dir / "learning-curves.png")`` at the end of a run."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    learning_curves(run_dirs, log_error).savefig(out, dpi=100)
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Draw learning curves of training runs from their metrics.jsonl.")
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders (with metrics.jsonl)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the PNG to write (default: RUN_DIR/learning-curves.png of the first run)")
    parser.add_argument("--linear", action="store_true", help="validation error on a linear axis (default log)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Path:
    args = parse_args(argv)
    out = args.out or args.run_dirs[0] / "learning-curves.png"
    try:
        written = plot_runs(args.run_dirs, out, log_error=not args.linear)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from error
    print(f"learning curves: {written}")
    return written


if __name__ == "__main__":
    main()
