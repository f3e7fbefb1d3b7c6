"""The command lines of the figures: ``train/visualize.py`` (:func:`visualize_main`) and ``train/plot.py``
(:func:`plot_main`); the scripts in ``train/`` only call these.

Every flag and every input it names (the checkpoint or agent name, the MNIST folder, the run folders, the output
folder or file) is checked before anything is drawn or written: a bad one is an ``error: ...`` naming the flag and
exit status 2, as argparse gives for an unknown flag, never a traceback.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from agents.checkpoint import LoadedAgent, load_agent
from agents.figures.curves import learning_curves
from agents.figures.episodes import VIDEO_NEEDS, video_available, write_glimpse_figures
from agents.figures.heatmap import write_heatmap
from glimpse_env.cli import SEED, check_output_file, check_output_folder, fail, int_in, load_split
from glimpse_env.config import SPLITS
from glimpse_env.data import DigitSet

MAX_ROWS = 100  # digits in the glimpse grid: a picture about 230 pixels high per row
CHECKPOINT = "CHECKPOINT"  # how errors name the positional argument, as argparse does


def visualize_parser() -> argparse.ArgumentParser:
    """The flags of ``train/visualize.py``."""
    parser = argparse.ArgumentParser(
        prog="train/visualize.py", description="Draw where a trained RAM agent looks: a PNG grid and a GIF."
    )
    parser.add_argument("checkpoint", metavar=CHECKPOINT,
                        help="a checkpoint written by agents.save_agent, or the name of a shipped agent "
                             "(e.g. mnist28-6g, cluttered60-8g: the .pt files of assets/checkpoints/)")
    parser.add_argument("--out", default="assets", help="folder for the pictures (default assets)")
    parser.add_argument("--name", default=None, help="file name prefix (default: the checkpoint's name)")
    parser.add_argument("--rows", type=int_in(1, MAX_ROWS), default=6, help=f"digits in the grid, 1 to {MAX_ROWS} "
                        "(default 6)")
    parser.add_argument("--seed", type=SEED, default=0, help="chooses the digits and the first glimpses (>= 0)")
    parser.add_argument("--split", choices=SPLITS, default="test",
                        help="the digits shown (default test, for pictures of shipped models; make choices during "
                             "research on validation)")
    parser.add_argument("--data-dir", default=None, help="folder of the MNIST .gz files (default $GLIMPSE_MNIST_DIR)")
    parser.add_argument("--play-window", action="store_true", help="also draw the human-play window")
    parser.add_argument("--versus-window", action="store_true",
                        help="also draw the --versus window after a scripted person answered")
    parser.add_argument("--video", action="store_true", help="also write the GIF's episode as an MP4 (needs moviepy)")
    parser.add_argument("--heatmap", action="store_true",
                        help="draw instead where the agent looks over many digits (NAME-heatmap.png)")
    parser.add_argument("--num-images", type=int_in(1), default=None,
                        help="with --heatmap: the first N digits of the split (default all of them)")
    return parser


def parse_visualize_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags of ``train/visualize.py``, checked on their own and together (not yet the files they name)."""
    parser = visualize_parser()
    args = parser.parse_args(argv)
    if args.heatmap and (args.play_window or args.versus_window or args.video):
        parser.error("--play-window, --versus-window and --video belong to the per-digit figures, not to --heatmap")
    if args.num_images is not None and not args.heatmap:
        parser.error("argument --num-images: goes with --heatmap")
    flag = "--name" if args.name is not None else CHECKPOINT
    args.name = args.name if args.name is not None else Path(args.checkpoint).stem
    separators = {os.sep, "/", os.altsep} - {None}
    if not args.name.strip() or args.name in (".", "..") or any(sep in args.name for sep in separators):
        fail(parser, flag, f"{args.name!r} cannot prefix a file name (no folders: use --out for those)")
    return args


def planned_files(args: argparse.Namespace) -> list[str]:
    """The names of the files the figures' flags ask for."""
    if args.heatmap:
        return [f"{args.name}-heatmap.png"]
    kinds = ["glimpses.png", "episode.gif"] + ["episode.mp4"] * args.video + ["play-window.png"] * args.play_window
    return [f"{args.name}-{kind}" for kind in kinds + ["versus-window.png"] * args.versus_window]


def check_visualize_inputs(
    parser: argparse.ArgumentParser, args: argparse.Namespace, digits: DigitSet | None
) -> tuple[LoadedAgent, DigitSet]:
    """The agent and the digits the flags name, each checked (``error:`` naming the flag otherwise), and the output
    folder checked; nothing is written."""
    check_output_folder(parser, "--out", args.out)
    for file_name in planned_files(args):
        if (Path(args.out) / file_name).is_dir():
            fail(parser, "--out", f"{Path(args.out) / file_name} is a folder, where a picture would be written")
    if args.video and not video_available():
        fail(parser, "--video", VIDEO_NEEDS)
    try:
        loaded = load_agent(args.checkpoint, "cpu")
    except (OSError, ValueError) as error:
        fail(parser, CHECKPOINT, error)
    digits = digits if digits is not None else load_split(parser, args.split, args.data_dir)
    if args.rows > len(digits):
        fail(parser, "--rows", f"the {args.split} split has {len(digits)} digits, fewer than {args.rows}")
    if args.num_images is not None and args.num_images > len(digits):
        fail(parser, "--num-images", f"must be at most {len(digits)} (the {args.split} split), got {args.num_images}")
    return loaded, digits


def visualize_main(argv: Sequence[str] | None = None, digits: DigitSet | None = None) -> dict[str, Path]:
    """``train/visualize.py``: write the pictures; returns their paths by kind. ``digits`` replaces the split's
    digits (tests)."""
    args = parse_visualize_args(argv)
    loaded, digits = check_visualize_inputs(visualize_parser(), args, digits)
    common = dict(seed=args.seed, split=args.split, digits=digits, data_dir=args.data_dir)
    if args.heatmap:
        written = {"heatmap": write_heatmap(loaded.model, loaded.env_kwargs, args.out, args.name, args.num_images,
                                            **common)}
    else:
        written = write_glimpse_figures(loaded, args.out, args.name, args.rows, play_window=args.play_window,
                                        versus_window=args.versus_window, video=args.video, **common)
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return written


# ---------------------------------------------------------------------------------------------------- plot
def plot_parser() -> argparse.ArgumentParser:
    """The flags of ``train/plot.py``."""
    parser = argparse.ArgumentParser(
        prog="train/plot.py", description="Draw learning curves of training runs from their metrics.jsonl."
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders (with metrics.jsonl)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the picture to write, .png (or .pdf, .svg, ...) (default: RUN_DIR/learning-curves.png "
                             "of the first run)")
    parser.add_argument("--linear", action="store_true", help="validation error on a linear axis (default log)")
    return parser


def plot_main(argv: Sequence[str] | None = None) -> Path:
    """``train/plot.py``: draw the learning curves of the run folders into ``--out``; returns its path. Every run
    folder is read, and ``--out`` checked, before the picture is written."""
    parser = plot_parser()
    args = parser.parse_args(argv)
    try:
        figure = learning_curves(args.run_dirs, log_error=not args.linear)
    except (OSError, ValueError) as error:
        fail(parser, "RUN_DIR", error)
    out = args.out or args.run_dirs[0] / "learning-curves.png"
    check_output_file(parser, "--out", out, picture_formats(figure))
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(out, dpi=100)
    except OSError as error:  # the disk, not the command line: exit status 1
        parser.exit(1, f"error: {out} could not be written ({error})\n")
    print(f"learning curves: {out}")
    return out


def picture_formats(figure: Figure) -> dict[str, str]:
    """The file suffixes matplotlib can save ``figure`` as (``png``, ``pdf``, ``svg``, ...)."""
    canvas = figure.canvas if isinstance(figure.canvas, FigureCanvasAgg) else FigureCanvasAgg(figure)
    return canvas.get_supported_filetypes()
