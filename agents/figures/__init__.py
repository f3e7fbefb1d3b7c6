"""Figures of trained agents and of training runs: where an agent looks (per digit, and as a heatmap over many),
its episodes as GIF or MP4, and learning curves. ``train/visualize.py`` and ``train/plot.py`` are their command
lines (:mod:`agents.figures.cli`); the trainer draws a run's figures at its end with :func:`draw_run_figures`.

Imported on demand (``import agents`` does not import it): it needs matplotlib and pygame, which training itself
does not.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from agents.checkpoint import load_agent
from agents.figures.curves import REFERENCE_ERRORS, learning_curves, plot_runs, read_metrics
from agents.figures.episodes import (
    AgentEpisodes,
    draw_glimpse_grid,
    draw_play_window,
    draw_versus_window,
    frame_durations,
    record_episode,
    run_agent,
    save_gif,
    save_video,
    write_glimpse_figures,
)
from agents.figures.heatmap import GlimpseCensus, draw_heatmap, glimpse_census, write_heatmap

__all__ = [
    "REFERENCE_ERRORS",
    "AgentEpisodes",
    "GlimpseCensus",
    "draw_glimpse_grid",
    "draw_heatmap",
    "draw_play_window",
    "draw_run_figures",
    "draw_versus_window",
    "frame_durations",
    "glimpse_census",
    "learning_curves",
    "plot_runs",
    "read_metrics",
    "record_episode",
    "run_agent",
    "save_gif",
    "save_video",
    "write_glimpse_figures",
    "write_heatmap",
]


def draw_run_figures(run_dir: str | os.PathLike, data_dir: str | None = None) -> dict[str, Path]:
    """A finished training run's figures, into its folder: the learned glimpse paths of ``best.pt`` on six test
    digits (``glimpse_paths-glimpses.png``, ``glimpse_paths-episode.gif``) and the learning curves of its
    ``metrics.jsonl`` (``learning-curves.png``). ``data_dir``: the MNIST folder (default ``$GLIMPSE_MNIST_DIR``).

    A figure that fails to draw costs only that figure (a warning on stderr), never the run's results. Returns the
    paths written, by kind (``glimpses``, ``episode``, ``learning_curves``).
    """
    run_dir = Path(run_dir)

    def glimpse_paths() -> dict[str, Path]:
        written = write_glimpse_figures(load_agent(run_dir / "best.pt"), run_dir, "glimpse_paths", data_dir=data_dir)
        for kind, path in written.items():
            print(f"{kind}: {path}")
        return written

    def curves() -> dict[str, Path]:
        return {"learning_curves": plot_runs([run_dir], run_dir / "learning-curves.png")}

    written: dict[str, Path] = {}
    for name, draw in (("glimpse paths", glimpse_paths), ("learning curves", curves)):
        try:
            written.update(draw())
        except Exception as error:
            print(f"warning: the {name} were not drawn ({type(error).__name__}: {error}); the run's results are "
                  f"kept", file=sys.stderr)
    return written
