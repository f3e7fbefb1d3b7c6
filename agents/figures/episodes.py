"""Figures of a trained agent's episodes: where it looks and what it sees there (``train/visualize.py`` draws them).

* :func:`draw_glimpse_grid`: one row per digit: the canvas with the agent's numbered glimpse path (the finest
  scale's box at every glimpse), the label and the agent's answer; then every glimpse as the agent saw it, all
  scales at once as Mnih et al. picture them (each scale magnified to the area it covers, finer scales inside; thin
  lines in the scales' colours mark where each one ends);
* :func:`record_episode`: one episode, frame by frame, as ``render_mode="rgb_array"`` draws it (:func:`save_gif`,
  :func:`save_video`);
* :func:`draw_play_window`: the human-play window (``python -m glimpse_env.play``) after a person took the agent's
  glimpses on a digit and is about to name it;
* :func:`draw_versus_window`: the window of ``python -m glimpse_env.play --versus`` after a scripted person played
  digits against the agent.

:func:`write_glimpse_figures` writes them into a folder. The agent plays deterministically (it looks at the mean of
its location policy). All drawing is :mod:`glimpse_env.drawing`'s and :mod:`glimpse_env.render`'s, every box from
the retina's own :func:`glimpse_env.retina.glimpse_boxes`.
"""

from __future__ import annotations

import itertools
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
from agents.checkpoint import LoadedAgent
from agents.ram import RecurrentAttentionModel
from glimpse_env.config import GlimpseConfig, env_arguments
from glimpse_env.data import DigitSet
from glimpse_env.drawing import (
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
    surface_to_array,
)
from glimpse_env.pixels import softmax
from glimpse_env.play_loop import PlayLoop, agent_episode

FIGURE_SIDE = 180  # canvases and glimpse tiles are magnified by the whole number that brings them nearest this
FIGURE_PAD = 14
FIGURE_CAPTION = 24
FIGURE_MARGIN = 10  # dark margin around each canvas: boxes may reach past its edge
FRAME_MS, LAST_FRAME_MS = 900, 2500  # GIF (and video) pace
VIDEO_FPS = 10  # the video repeats each frame to hold it as long as the GIF does
VIDEO_NEEDS = 'an MP4 needs moviepy: pip install -e ".[video]"'
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
        raise ImportError(f'{VIDEO_NEEDS} ({error})') from error
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


def video_available() -> bool:
    """Whether :func:`save_video` can write (moviepy is installed)."""
    try:
        from moviepy.video.io.ImageSequenceClip import ImageSequenceClip  # noqa: F401
    except ImportError:
        return False
    return True


def save_picture(surface: pygame.Surface, path: Path) -> Path:
    """``surface`` as a PNG (or another format PIL knows by the suffix) at ``path``."""
    Image.fromarray(surface_to_array(surface)).save(path)
    return path


def write_glimpse_figures(
    loaded: LoadedAgent, out: str | os.PathLike, name: str, rows: int = 6, seed: int = 0, split: str = "test",
    digits: DigitSet | None = None, data_dir: str | None = None, play_window: bool = False,
    versus_window: bool = False, video: bool = False,
) -> dict[str, Path]:
    """Write the agent's figures on ``rows`` digits of ``split`` chosen with ``seed`` into the folder ``out`` (made
    as needed): ``NAME-glimpses.png`` (:func:`draw_glimpse_grid`) and ``NAME-episode.gif`` (the first digit's
    episode), and as asked ``NAME-episode.mp4``, ``NAME-play-window.png``, ``NAME-versus-window.png``. Returns the
    paths by kind (``glimpses``, ``episode``, ``video``, ``play_window``, ``versus_window``)."""
    model, env_kwargs = loaded.model, loaded.env_kwargs
    data = dict(split=split, digits=digits, data_dir=data_dir)
    episodes = run_agent(model, env_kwargs, rows, seed, **data)
    first = int(episodes.indices[0])
    frames = record_episode(model, env_kwargs, first, seed, **data)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {"glimpses": save_picture(draw_glimpse_grid(episodes), out / f"{name}-glimpses.png")}
    written["episode"] = out / f"{name}-episode.gif"
    save_gif(frames, written["episode"])
    if video:
        written["video"] = out / f"{name}-episode.mp4"
        save_video(frames, written["video"])
    if play_window:
        window = draw_play_window(env_kwargs, first, episodes.locations[0], seed, **data)
        written["play_window"] = save_picture(window, out / f"{name}-play-window.png")
    if versus_window:
        window = draw_versus_window(model, env_kwargs, episodes.indices, seed, **data)
        written["versus_window"] = save_picture(window, out / f"{name}-versus-window.png")
    return written
