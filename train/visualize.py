"""Figures of a trained RAM agent at work, for the README: where it looks, and what it sees there.

    python train/visualize.py assets/checkpoints/mnist28-6g.pt --out assets --rows 6 --seed 0 --play-window

writes, into ``--out`` (named after the checkpoint unless ``--name``):

* ``NAME-glimpses.png``: one row per test digit (chosen at random with ``--seed``): the canvas with the agent's
  numbered glimpse path (the finest scale's box at every glimpse), the label and the agent's answer; then every
  glimpse as the agent saw it, all scales at once as Mnih et al. picture them (each scale magnified to the area it
  covers, finer scales inside; thin lines in the scales' colours mark where each one ends);
* ``NAME-episode.gif``: one episode, frame by frame, as ``render_mode="rgb_array"`` draws it;
* with ``--play-window``, ``NAME-play-window.png``: the human-play window (``python -m glimpse_env.play``) after
  a person took the agent's glimpses on the first digit and is about to name it.

The agent plays deterministically (it looks at the mean of its location policy). All drawing is
:mod:`glimpse_env.render`'s.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from PIL import Image

import glimpse_env  # noqa: F401  (registers GlimpseMNIST-v0)
from agents import RecurrentAttentionModel, load_agent
from glimpse_env.config import GlimpseConfig
from glimpse_env.data import DigitSet
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

FIGURE_SIDE = 180  # canvases and glimpse tiles are magnified by the whole number that brings them nearest this
FIGURE_PAD = 14
FIGURE_CAPTION = 24
FIGURE_MARGIN = 10  # dark margin around each canvas: boxes may reach past its edge
FRAME_MS, LAST_FRAME_MS = 900, 2500  # GIF pace


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
    first = {key: value[0].numpy() for key, value in model.reset_options(1, deterministic=True).items()}
    observation, _ = env.reset(seed=seed, options={"index": int(index), **first})
    frames = [env.render()]
    state = model.initial_state(1)
    terminated = False
    while not terminated:
        batched = {key: torch.as_tensor(value)[None] for key, value in observation.items()}
        action, state = model.act(batched, state, deterministic=True)
        action = {key: value[0].numpy() for key, value in action.items()}
        observation, _, terminated, _, _ = env.step(action)
        frames.append(env.render())
    env.close()
    return frames


def save_gif(frames: Sequence[np.ndarray], path: str | os.PathLike, frame_ms: int = FRAME_MS,
             last_frame_ms: int = LAST_FRAME_MS) -> None:
    """An endlessly looping animated GIF of RGB frames, the last one held longer."""
    images = [Image.fromarray(frame) for frame in frames]
    durations = [frame_ms] * (len(images) - 1) + [last_frame_ms]
    images[0].save(path, save_all=True, append_images=images[1:], duration=durations, loop=0)


def draw_play_window(
    env_kwargs: dict[str, Any], index: int, locations: np.ndarray, seed: int = 0, split: str = "test",
    digits: DigitSet | None = None, data_dir: str | None = None,
) -> pygame.Surface:
    """The human-play window on digit ``index`` after a person took glimpses at ``locations[1:]`` (``T x 2``; the
    first glimpse is given at the centre), about to name the digit."""
    from glimpse_env.play import PlayLoop

    kwargs = env_arguments(env_kwargs) | {"first_location": "center"}
    env = gym.make("GlimpseMNIST-v0", split=split, digits=digits, data_dir=data_dir, **kwargs)
    loop = PlayLoop(env, seed=seed)
    loop.new_episode(int(index))
    for location in locations[1:]:
        loop.look_at(location)
    surface = loop.draw()
    env.close()
    return surface


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Draw where a trained RAM agent looks: a PNG grid and a GIF.")
    parser.add_argument("checkpoint", help="a checkpoint written by agents.save_agent")
    parser.add_argument("--out", default="assets", help="folder for the pictures (default assets)")
    parser.add_argument("--name", default=None, help="file name prefix (default: the checkpoint's name)")
    parser.add_argument("--rows", type=int, default=6, help="digits in the grid (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="chooses the digits and the first glimpses")
    parser.add_argument("--split", choices=("train", "validation", "test"), default="test")
    parser.add_argument("--data-dir", default=None, help="folder of the MNIST .gz files (default $GLIMPSE_MNIST_DIR)")
    parser.add_argument("--play-window", action="store_true", help="also draw the human-play window")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be >= 1")
    return args


def main(argv: Sequence[str] | None = None, digits: DigitSet | None = None) -> dict[str, Path]:
    """Write the pictures; returns their paths by kind. ``digits`` replaces the split's digits (tests)."""
    args = parse_args(argv)
    loaded = load_agent(args.checkpoint, "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or Path(args.checkpoint).stem
    data = dict(split=args.split, digits=digits, data_dir=args.data_dir)

    episodes = run_agent(loaded.model, loaded.env_kwargs, args.rows, args.seed, **data)
    written = {"glimpses": out / f"{name}-glimpses.png", "episode": out / f"{name}-episode.gif"}
    Image.fromarray(surface_to_array(draw_glimpse_grid(episodes))).save(written["glimpses"])
    frames = record_episode(loaded.model, loaded.env_kwargs, int(episodes.indices[0]), args.seed, **data)
    save_gif(frames, written["episode"])
    if args.play_window:
        written["play_window"] = out / f"{name}-play-window.png"
        window = draw_play_window(loaded.env_kwargs, int(episodes.indices[0]), episodes.locations[0], args.seed, **data)
        Image.fromarray(surface_to_array(window)).save(written["play_window"])
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return written


if __name__ == "__main__":
    main()
