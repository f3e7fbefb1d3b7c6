"""Figures of a trained RAM agent at work, for the README: where it looks, and what it sees there.

    python train/visualize.py assets/checkpoints/mnist28-6g.pt --out assets --rows 6 --seed 0 --play-window \
        --versus-window --video

writes, into ``--out`` (named after the checkpoint unless ``--name``):

* ``NAME-glimpses.png``: one row per test digit (chosen at random with ``--seed``): the canvas with the agent's
  numbered glimpse path (the finest scale's box at every glimpse), the label and the agent's answer; then every
  glimpse as the agent saw it, all scales at once as Mnih et al. picture them (each scale magnified to the area it
  covers, finer scales inside; thin lines in the scales' colours mark where each one ends);
* ``NAME-episode.gif``: one episode, frame by frame, as ``render_mode="rgb_array"`` draws it;
* with ``--play-window``, ``NAME-play-window.png``: the human-play window (``python -m glimpse_env.play``) after
  a person took the agent's glimpses on the first digit and is about to name it;
* with ``--versus-window``, ``NAME-versus-window.png``: the window of ``python -m glimpse_env.play --versus``
  right after a scripted person (it looks at fixed spots and names the label) played the grid's digits against the
  agent: the last digit's canvas revealed with both paths, both answers and both running scores;
* with ``--video``, ``NAME-episode.mp4``: the GIF's episode as a video, the same frames at the same pace (needs
  moviepy: ``pip install -e ".[video]"``).

``--heatmap`` draws instead where the agent looks over many digits (``--num-images``, default the whole split):
``NAME-heatmap.png`` (matplotlib), see :func:`draw_heatmap`:

    python train/visualize.py assets/checkpoints/cluttered60-8g.pt --heatmap --out assets

``--split`` chooses the digits of every figure: the test split (the default) for pictures of shipped models, the
validation split for anything that informs a choice during research (``--heatmap --split validation``).

The agent plays deterministically (it looks at the mean of its location policy). All drawing is
:mod:`glimpse_env.render`'s.
"""

from __future__ import annotations

import argparse
import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

import glimpse_env  # noqa: F401  (registers GlimpseMNIST-v0)
from agents import RecurrentAttentionModel, load_agent, run_episodes
from glimpse_env.config import MNIST_SIDE, GlimpseConfig
from glimpse_env.data import DigitSet, load_digits
from glimpse_env.play import PlayLoop, agent_episode
from glimpse_env.render import (
    BACKGROUND,
    NOTE_COLOUR,
    RIGHT_COLOUR,
    WRONG_COLOUR,
    CanvasView,
    draw_canvas,
    draw_foveated_glimpse,
    draw_glimpse_path,
    draw_text,
    pygame,
    softmax,
    surface_to_array,
)
from glimpse_env.retina import glimpse_boxes

FIGURE_SIDE = 180  # canvases and glimpse tiles are magnified by the whole number that brings them nearest this
FIGURE_PAD = 14
FIGURE_CAPTION = 24
FIGURE_MARGIN = 10  # dark margin around each canvas: boxes may reach past its edge
FRAME_MS, LAST_FRAME_MS = 900, 2500  # GIF (and video) pace
VIDEO_FPS = 10  # the video repeats each frame to hold it as long as the GIF does
HEATMAP_SLOTS = 1000  # episodes played at once for the heatmap
# Where the scripted person of --versus-window looks after the given first glimpse, in turn: the centre, then
# halfway to each corner, then halfway to each edge.
VERSUS_SPOTS = ((0.0, 0.0), (-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5), (0.0, -0.5), (0.5, 0.0), (0.0, 0.5),
                (-0.5, 0.0))


@dataclass(frozen=True)
class AgentEpisodes:
    """Episodes the agent played, one per digit: everything the figures show."""

    config: GlimpseConfig
    indices: np.ndarray  # B dataset indices of the split
    canvases: np.ndarray  # B x size x size uint8
    locations: np.ndarray  # B x T x 2
    glimpses: np.ndarray  # B x T x k x g x g, as the agent received them
    probabilities: np.ndarray  # B x 10, the agent's final class probabilities
    labels: np.ndarray  # B


def env_arguments(env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's env arguments that fix the task (not the split, data folder or render mode)."""
    return {key: value for key, value in env_kwargs.items() if key not in ("split", "data_dir", "render_mode")}


@torch.no_grad()
def run_agent(
    model: RecurrentAttentionModel,
    env_kwargs: dict[str, Any],
    num_digits: int,
    seed: int = 0,
    split: str = "test",
    digits: DigitSet | None = None,
    data_dir: str | None = None,
) -> AgentEpisodes:
    """The agent's deterministic episodes on ``num_digits`` digits of ``split`` chosen at random with ``seed``."""
    env = gym.make_vec(
        "GlimpseMNIST-v0", num_envs=num_digits, device="cpu", split=split, digits=digits, data_dir=data_dir,
        **env_arguments(env_kwargs),
    )
    batch = env.unwrapped
    indices = np.sort(np.random.default_rng(seed).choice(len(batch.digits), num_digits, replace=False))
    first = model.reset_options(num_digits, deterministic=True)  # where the agent puts its first glimpse, if it does
    observation, _ = env.reset(seed=seed, options={"indices": torch.as_tensor(indices), **first})
    state = model.initial_state(num_digits)
    glimpses = [observation["glimpse"]]
    while True:
        action, state = model.act(observation, state, deterministic=True)
        observation, _, terminated, _, info = env.step(action)
        if bool(terminated[0]):
            break
        glimpses.append(observation["glimpse"])
    episodes = AgentEpisodes(
        config=batch.config,
        indices=indices,
        canvases=batch.canvases.numpy(),
        locations=batch.locations.numpy(),
        glimpses=torch.stack(glimpses, dim=1).numpy(),
        probabilities=np.stack([softmax(scores) for scores in action["prediction"].numpy()]),
        labels=info["label"].numpy(),
    )
    env.close()
    return episodes


def draw_glimpse_grid(episodes: AgentEpisodes) -> pygame.Surface:
    """One row per digit: the canvas with the numbered glimpse path, then each glimpse as the agent saw it."""
    config = episodes.config
    canvas_zoom = max(1, round(FIGURE_SIDE / config.size))
    canvas_side = config.size * canvas_zoom
    foveated_side = config.glimpse_size * 2 ** (config.scales - 1)
    tile_zoom = max(1, round(FIGURE_SIDE / foveated_side))
    tile_side = foveated_side * tile_zoom
    column_left = FIGURE_PAD + canvas_side + 2 * FIGURE_MARGIN + FIGURE_PAD
    row_height = FIGURE_CAPTION + max(canvas_side + 2 * FIGURE_MARGIN, tile_side) + FIGURE_PAD
    steps = episodes.locations.shape[1]
    width = column_left + steps * (tile_side + FIGURE_PAD)
    height = FIGURE_PAD + FIGURE_CAPTION + len(episodes.indices) * row_height
    surface = pygame.Surface((width, height))
    surface.fill(BACKGROUND)

    title = (f"{config.size}x{config.size}, clutter {config.clutter}: {config.scales} scale(s) of "
             f"{config.glimpse_size}x{config.glimpse_size}, {steps} glimpses")
    draw_text(surface, title, (FIGURE_PAD, FIGURE_PAD), 22, bold=True)
    for row in range(len(episodes.indices)):
        top = FIGURE_PAD + FIGURE_CAPTION + row * row_height
        label, answer = int(episodes.labels[row]), int(np.argmax(episodes.probabilities[row]))
        verdict = f"label {label}, agent {answer} ({episodes.probabilities[row, answer]:.0%})"
        colour = RIGHT_COLOUR if answer == label else WRONG_COLOUR
        draw_text(surface, f"#{episodes.indices[row]}: {verdict}", (FIGURE_PAD, top + 4), 18, colour)
        view = CanvasView(config, (FIGURE_PAD + FIGURE_MARGIN, top + FIGURE_CAPTION + FIGURE_MARGIN), canvas_zoom)
        draw_canvas(surface, view, episodes.canvases[row], margin=FIGURE_MARGIN)
        draw_glimpse_path(surface, view, episodes.locations[row], boxes="each")
        for step in range(steps):
            position = (column_left + step * (tile_side + FIGURE_PAD), top + FIGURE_CAPTION + FIGURE_MARGIN)
            draw_text(surface, f"glimpse {step + 1}", (position[0], top + 4), 18, NOTE_COLOUR)
            draw_foveated_glimpse(surface, position, episodes.glimpses[row, step], config, tile_zoom)
    return surface


@torch.no_grad()
def record_episode(
    model: RecurrentAttentionModel,
    env_kwargs: dict[str, Any],
    index: int,
    seed: int = 0,
    split: str = "test",
    digits: DigitSet | None = None,
    data_dir: str | None = None,
) -> list[np.ndarray]:
    """The ``rgb_array`` frames of one deterministic episode of the agent on digit ``index`` of ``split``."""
    env = gym.make("GlimpseMNIST-v0", render_mode="rgb_array", split=split, digits=digits, data_dir=data_dir,
                   **env_arguments(env_kwargs))
    frames = [env.render() for _ in agent_episode(env, model, seed, {"index": int(index)})]
    env.close()
    return frames


def frame_durations(count: int, frame_ms: int = FRAME_MS, last_frame_ms: int = LAST_FRAME_MS) -> list[int]:
    """How long each of ``count`` frames stays up (ms): the last one longer, so that the answer can be read."""
    return [frame_ms] * (count - 1) + [last_frame_ms]


def save_gif(frames: Sequence[np.ndarray], path: str | os.PathLike, frame_ms: int = FRAME_MS,
             last_frame_ms: int = LAST_FRAME_MS) -> None:
    """An endlessly looping animated GIF of RGB frames, the last one held longer."""
    images = [Image.fromarray(frame) for frame in frames]
    durations = frame_durations(len(images), frame_ms, last_frame_ms)
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)


def save_video(frames: Sequence[np.ndarray], path: str | os.PathLike, frame_ms: int = FRAME_MS,
               last_frame_ms: int = LAST_FRAME_MS) -> None:
    """An MP4 (H.264) of RGB frames at the GIF's pace, written with moviepy (frames must have even sides, as
    ``render_mode="rgb_array"`` frames do)."""
    try:
        from moviepy.video.io.ImageSequenceClip import ImageSequenceClip  # the path moviepy 1 and 2 share
    except ImportError as error:
        raise SystemExit('--video needs moviepy: pip install -e ".[video]"') from error
    seconds = [ms / 1000 for ms in frame_durations(len(frames), frame_ms, last_frame_ms)]
    clip = ImageSequenceClip(list(frames), durations=seconds)
    clip.write_videofile(str(path), fps=VIDEO_FPS, codec="libx264", audio=False, logger=None)
    clip.close()


def draw_play_window(
    env_kwargs: dict[str, Any], index: int, locations: np.ndarray, seed: int = 0, split: str = "test",
    digits: DigitSet | None = None, data_dir: str | None = None,
) -> pygame.Surface:
    """The human-play window on digit ``index`` after a person took glimpses at ``locations[1:]`` (``T x 2``; the
    first glimpse is given at the centre), about to name the digit."""
    kwargs = env_arguments(env_kwargs) | {"first_location": "center"}
    env = gym.make("GlimpseMNIST-v0", split=split, digits=digits, data_dir=data_dir, **kwargs)
    loop = PlayLoop(env, seed=seed)
    loop.new_episode(int(index))
    for location in locations[1:]:
        loop.look_at(location)
    surface = loop.draw()
    env.close()
    return surface


def draw_versus_window(
    model: RecurrentAttentionModel, env_kwargs: dict[str, Any], indices: Sequence[int], seed: int = 0,
    split: str = "test", digits: DigitSet | None = None, data_dir: str | None = None,
) -> pygame.Surface:
    """The ``--versus`` window (``python -m glimpse_env.play --versus``) right after a scripted person answered
    the last of ``indices``: digit after digit, the agent played, then the person took the given first glimpse,
    looked at :data:`VERSUS_SPOTS` in turn and named the label. It shows the revealed canvas with both paths, both
    answers, the agent's class probabilities and both running scores."""
    env = gym.make("GlimpseMNIST-v0", split=split, digits=digits, data_dir=data_dir, **env_arguments(env_kwargs))
    loop = PlayLoop(env, seed=seed, opponent=model)
    for index in indices:
        loop.new_episode(int(index))
        for spot in itertools.islice(itertools.cycle(VERSUS_SPOTS), loop.config.n_glimpses - 1):
            loop.look_at(np.asarray(spot, dtype=np.float32))
        loop.name_digit(loop.opponent_episode.label)
    surface = loop.draw()
    env.close()
    return surface


@dataclass(frozen=True)
class GlimpseCensus:
    """Where the agent looked in deterministic episodes on many digits: what the heatmap shows."""

    config: GlimpseConfig
    split: str
    locations: np.ndarray  # N x T x 2, in [-1, 1]
    digit_centres: np.ndarray  # N x 2, canvas pixel (x, y) of the centre of each digit's 28x28 box
    on_digit: np.ndarray  # N x T: the glimpse's finest-scale box overlaps the digit's ink box
    on_digit_by_chance: float  # the same fraction for one uniform random location per digit
    error: float  # the deterministic policy's error on these digits


def ink_boxes(images: torch.Tensor) -> torch.Tensor:
    """The bounding boxes ``(x0, y0, x1, y1)`` (end exclusive, ``B x 4``) of the nonzero pixels of ``B x 28 x 28``
    digits, in the digit's own pixels (a blank digit gets an empty box, which nothing overlaps)."""
    ink = images > 0
    pixels = torch.arange(images.shape[-1], device=images.device)

    def span(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # B x 28 -> first and one past last
        first = torch.where(mask, pixels, images.shape[-1]).min(1).values
        return first, torch.where(mask, pixels, -1).max(1).values + 1

    (x0, x1), (y0, y1) = span(ink.any(1)), span(ink.any(2))
    return torch.stack([x0, y0, x1, y1], dim=1)


def boxes_overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Whether boxes ``(x0, y0, x1, y1)`` (end exclusive) of ``a`` and ``b`` share a pixel (broadcasting)."""
    return (a[..., 0] < b[..., 2]) & (b[..., 0] < a[..., 2]) & (a[..., 1] < b[..., 3]) & (b[..., 1] < a[..., 3])


@torch.no_grad()
def glimpse_census(
    model: RecurrentAttentionModel,
    env_kwargs: dict[str, Any],
    num_images: int | None = None,
    seed: int = 0,
    split: str = "test",
    digits: DigitSet | None = None,
    data_dir: str | None = None,
    slots: int = HEATMAP_SLOTS,
) -> GlimpseCensus:
    """The agent's deterministic episodes on images ``0 .. num_images - 1`` of ``split`` (default all), played
    ``slots`` at a time through the vector env (``agents.run_episodes``, which puts a learned first glimpse where
    the agent wants it; ``seed`` seeds the env's first glimpses otherwise)."""
    available = len(digits if digits is not None else load_digits(split, data_dir))  # cached: the env reuses it
    num_images = available if num_images is None else num_images
    if not 1 <= num_images <= available:
        raise ValueError(f"num_images must lie in [1, {available}] (the {split} split), got {num_images}")
    slots = min(slots, num_images)
    env = gym.make_vec("GlimpseMNIST-v0", num_envs=slots, device="cpu", split=split, digits=digits,
                       data_dir=data_dir, **env_arguments(env_kwargs))
    batch, config = env.unwrapped, env.unwrapped.config
    env.reset(seed=seed)
    chance_generator = torch.Generator().manual_seed(seed)

    def finest_boxes(locations: torch.Tensor) -> torch.Tensor:  # ... x 2 -> ... x 4
        flat = glimpse_boxes(locations.reshape(-1, 2), config.size, config.size, config.glimpse_size, config.scales)
        return flat[:, 0].reshape(*locations.shape[:-1], 4)

    locations, centres, on_digit, by_chance, wrong = [], [], [], [], 0
    for start in range(0, num_images, slots):
        indices = torch.arange(start, min(start + slots, num_images))
        count = len(indices)
        padded = torch.cat([indices, indices[:1].expand(slots - count)])  # the last batch padded, the padding dropped
        episodes = run_episodes(model, env, {"indices": padded}, deterministic=True)
        where = episodes.locations.transpose(0, 1)[:count].float()  # count x T x 2
        offset = batch.digit_offsets[:count].cpu()  # the (x, y) of each digit's top-left pixel on its canvas
        ink = ink_boxes(batch.digits.images[indices].cpu()) + offset.repeat(1, 2)
        on_digit.append(boxes_overlap(finest_boxes(where), ink[:, None]))
        uniform = torch.rand(count, 2, generator=chance_generator) * 2.0 - 1.0
        by_chance.append(boxes_overlap(finest_boxes(uniform), ink))
        wrong += int((episodes.logits[:count].argmax(1).cpu() != episodes.labels[:count].cpu()).sum())
        locations.append(where)
        centres.append(offset.float() + MNIST_SIDE / 2)
    env.close()
    return GlimpseCensus(
        config=config,
        split=split,
        locations=torch.cat(locations).numpy(),
        digit_centres=torch.cat(centres).numpy(),
        on_digit=torch.cat(on_digit).numpy(),
        on_digit_by_chance=float(torch.cat(by_chance).float().mean()),
        error=wrong / num_images,
    )


def draw_heatmap(census: GlimpseCensus, title: str = "") -> Figure:
    """Where the agent looks, over all the census's digits, as a matplotlib figure.

    Top: the fraction of glimpses at each step whose finest scale's box overlaps the digit, against the step, and
    the same fraction for a glimpse at a uniform random location (dashed). "Overlaps the digit" means: shares a
    pixel with the bounding box of the digit's nonzero pixels (its ink, not its whole 28x28 square, which has black
    margins). Then one row per glimpse ``t``: (a) the density of the glimpse centres on the canvas (canvas pixels,
    y down, the canvas's edge in white); (b) the density of the glimpse centres relative to the centre of the
    digit's 28x28 square (drawn dashed), which undoes the translation. Colours: the fraction of that step's
    glimpses in each cell, on a power scale (exponent 0.4: faint cells stay visible) shared by all panels of a column.
    """
    from matplotlib.colors import PowerNorm

    config, locations = census.config, census.locations
    count, steps = locations.shape[:2]
    size = config.size
    pixels = (locations + 1.0) / 2.0 * size  # the glimpse centres in canvas pixels (retina.location_to_pixel)
    relative = pixels - census.digit_centres[:, None, :]
    reach = size - MNIST_SIDE / 2  # the farthest a glimpse centre can be from the digit's centre
    canvas_bins = size if size <= 30 else size // 2
    relative_bins = int(2 * reach) if reach <= 15 else int(reach)

    def histograms(points: np.ndarray, low: float, high: float, bins: int) -> np.ndarray:  # T x bins x bins
        return np.stack([
            np.histogram2d(points[:, t, 1], points[:, t, 0], bins=bins, range=[[low, high], [low, high]])[0] / count
            for t in range(steps)
        ])  # rows are y: the images are drawn as pictures, y down

    columns = [
        (histograms(pixels, 0.0, size, canvas_bins), (0.0, size), "on the canvas (pixels)"),
        (histograms(relative, -reach, reach, relative_bins), (-reach, reach), "relative to the digit's centre"),
    ]
    figure = Figure(figsize=(9.0, 2.5 + 2.9 * (steps + 1)), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(steps + 2, 2, height_ratios=[1.0] * (steps + 1) + [0.06])  # the last row: colour bars
    summary = figure.add_subplot(grid[0, :])
    fraction = 100.0 * census.on_digit.mean(axis=0)
    summary.plot(range(1, steps + 1), fraction, marker="o", label="the agent's glimpses")
    summary.axhline(100.0 * census.on_digit_by_chance, color="grey", linestyle="--",
                    label="a glimpse at a uniform random location")
    summary.set(xlabel="glimpse", ylabel="on the digit (%)", ylim=(0, 102), xticks=range(1, steps + 1),
                title="glimpses whose finest scale overlaps the digit's ink")
    summary.grid(True, alpha=0.3)
    summary.legend(loc="best", fontsize="small")

    for column, (density, (low, high), caption) in enumerate(columns):
        norm = PowerNorm(0.4, vmin=0.0, vmax=float(density.max()) or 1.0)
        for t in range(steps):
            axes = figure.add_subplot(grid[t + 1, column])
            image = axes.imshow(density[t], extent=(low, high, high, low), cmap="magma", norm=norm,
                                interpolation="nearest")
            if column == 0:
                axes.add_patch(Rectangle((0, 0), size, size, fill=False, edgecolor="white", linewidth=0.8))
                axes.set_ylabel(f"glimpse {t + 1}\n{fraction[t]:.0f}% on the digit")
            else:
                half = MNIST_SIDE / 2
                axes.add_patch(Rectangle((-half, -half), MNIST_SIDE, MNIST_SIDE, fill=False, edgecolor="white",
                                         linestyle="--", linewidth=0.8))
            if t == 0:
                axes.set_title(caption)
        top = norm.vmax
        figure.colorbar(image, cax=figure.add_subplot(grid[steps + 1, column]), orientation="horizontal",
                        ticks=[0.0, top / 16, top / 4, top], format="{x:.2%}", label="the step's glimpses in the cell")

    headline = (f"{size}x{size}, clutter {config.clutter}, {steps} glimpses of {config.scales} x "
                f"{config.glimpse_size}x{config.glimpse_size}: {count} {census.split} digits, deterministic "
                f"error {100 * census.error:.2f}%")
    figure.suptitle(f"{title}\n{headline}" if title else headline)
    return figure


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Draw where a trained RAM agent looks: a PNG grid and a GIF.")
    parser.add_argument("checkpoint", help="a checkpoint written by agents.save_agent")
    parser.add_argument("--out", default="assets", help="folder for the pictures (default assets)")
    parser.add_argument("--name", default=None, help="file name prefix (default: the checkpoint's name)")
    parser.add_argument("--rows", type=int, default=6, help="digits in the grid (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="chooses the digits and the first glimpses")
    parser.add_argument("--split", choices=("train", "validation", "test"), default="test",
                        help="the digits shown (default test, for pictures of shipped models; make choices during "
                             "research on validation)")
    parser.add_argument("--data-dir", default=None, help="folder of the MNIST .gz files (default $GLIMPSE_MNIST_DIR)")
    parser.add_argument("--play-window", action="store_true", help="also draw the human-play window")
    parser.add_argument("--versus-window", action="store_true",
                        help="also draw the --versus window after a scripted person answered")
    parser.add_argument("--video", action="store_true", help="also write the GIF's episode as an MP4 (needs moviepy)")
    parser.add_argument("--heatmap", action="store_true",
                        help="draw instead where the agent looks over many digits (NAME-heatmap.png)")
    parser.add_argument("--num-images", type=int, default=None,
                        help="with --heatmap: the first N digits of the split (default all of them)")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be >= 1")
    if args.heatmap and (args.play_window or args.versus_window or args.video):
        parser.error("--play-window, --versus-window and --video belong to the per-digit figures, not to --heatmap")
    if args.num_images is not None and not args.heatmap:
        parser.error("--num-images goes with --heatmap")
    return args


def main(argv: Sequence[str] | None = None, digits: DigitSet | None = None) -> dict[str, Path]:
    """Write the pictures; returns their paths by kind. ``digits`` replaces the split's digits (tests)."""
    args = parse_args(argv)
    loaded = load_agent(args.checkpoint, "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or Path(args.checkpoint).stem
    data = dict(split=args.split, digits=digits, data_dir=args.data_dir)

    if args.heatmap:
        census = glimpse_census(loaded.model, loaded.env_kwargs, args.num_images, args.seed, **data)
        written = {"heatmap": out / f"{name}-heatmap.png"}
        draw_heatmap(census, title=f"where {name} looks").savefig(written["heatmap"], dpi=100)
        print(f"heatmap: {written['heatmap']}")
        return written

    episodes = run_agent(loaded.model, loaded.env_kwargs, args.rows, args.seed, **data)
    written = {"glimpses": out / f"{name}-glimpses.png", "episode": out / f"{name}-episode.gif"}
    Image.fromarray(surface_to_array(draw_glimpse_grid(episodes))).save(written["glimpses"])
    frames = record_episode(loaded.model, loaded.env_kwargs, int(episodes.indices[0]), args.seed, **data)
    save_gif(frames, written["episode"])
    if args.video:
        written["video"] = out / f"{name}-episode.mp4"
        save_video(frames, written["video"])
    if args.play_window:
        written["play_window"] = out / f"{name}-play-window.png"
        window = draw_play_window(loaded.env_kwargs, int(episodes.indices[0]), episodes.locations[0], args.seed, **data)
        Image.fromarray(surface_to_array(window)).save(written["play_window"])
    if args.versus_window:
        written["versus_window"] = out / f"{name}-versus-window.png"
        window = draw_versus_window(loaded.model, loaded.env_kwargs, episodes.indices, args.seed, **data)
        Image.fromarray(surface_to_array(window)).save(written["versus_window"])
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return written


if __name__ == "__main__":
    main()
