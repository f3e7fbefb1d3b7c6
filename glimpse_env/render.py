"""Pictures of GlimpseMNIST episodes: the one drawing code behind ``render()``, the play window and the figures.

A frame shows, side by side, the canvas and what the retina delivered, and under them a status strip::

    +-------------------------------+----------------------------------+
    | canvas 60x60                  | 12x12 px      24x24 px seen as.. |
    |  +-------------------------+  |  +--------+   +--------+         |
    |  | the canvas, magnified,  |  |  | scale 1|   | scale 2|         |  each scale of the current glimpse
    |  | with the current        |  |  +--------+   +--------+         |  magnified: exactly the observation
    |  | glimpse's scale boxes   |  |  48x48 px seen as 12x12          |
    |  | and the numbered path   |  |  +--------+                      |
    |  | of earlier glimpses     |  |  | scale 3|                      |
    |  +-------------------------+  |  +--------+                      |
    +-------------------------------+----------------------------------+
    | glimpse 3 of 8                            class probabilities    |
    |  at (x, y) = (+0.25, -0.50)                                      |
    | prediction 7 (83%)   or, at the end:      |  | _ |  | || _ |  |  |
    | label 7, predicted 7: right (green) / wrong (red)  0 1 2 ... 9   |
    | notes: the play window's prompt, score and keys                  |
    +------------------------------------------------------------------+

Scale ``i`` has colour :func:`glimpse_env.drawing.scale_colour` everywhere. The building blocks (the canvas, glimpse
paths, the cursor, each scale's patch, the foveated glimpse, probability bars) are :mod:`glimpse_env.drawing`'s,
reused by :mod:`glimpse_env.play` and ``agents.figures``; this module composes them into frames and shows them in a
window. Everything draws on plain pygame surfaces, which needs no display: ``render_mode="rgb_array"`` works
headless, and ``"human"`` under ``SDL_VIDEODRIVER=dummy`` too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from glimpse_env.config import NUM_CLASSES, GlimpseConfig
from glimpse_env.drawing import (
    AGENT_PATH_COLOUR,
    BACKGROUND,
    BAR_GAP,
    BAR_WIDTH,
    CANVAS_MARGIN,
    CAPTION_HEIGHT,
    NOTE_COLOUR,
    RIGHT_COLOUR,
    WRONG_COLOUR,
    CanvasView,
    array_to_surface,
    draw_canvas,
    draw_cursor,
    draw_glimpse_path,
    draw_glimpse_scales,
    draw_probability_bars,
    draw_text,
    pygame,
    surface_to_array,
)
from glimpse_env.pixels import softmax

PAD = 12  # around and between the parts of a frame
CANVAS_TARGET = 336  # the canvas is magnified by the largest whole number that keeps it at most this wide
GLIMPSE_GAP = 12  # between the patches of the scales
STATUS_HEIGHT = 96
NOTE_HEIGHT = 22
MIN_FRAME_WIDTH = 760


# ---------------------------------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class FrameLayout:
    """Where everything of a frame goes, for one task configuration (the same for every frame of an episode)."""

    width: int
    height: int
    canvas: CanvasView
    canvas_panel: pygame.Rect  # the canvas and its margin; boxes and the path are clipped to it
    glimpse_zoom: int  # each scale's g x g patch is drawn magnified this much
    glimpse_rects: tuple[pygame.Rect, ...]  # one per scale: where its magnified patch is
    status: pygame.Rect

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the frame in pixels."""
        return self.width, self.height


def frame_layout(config: GlimpseConfig, note_lines: int = 0) -> FrameLayout:
    """The layout of frames for ``config``, with room for ``note_lines`` lines of notes under the status."""
    zoom = max(1, CANVAS_TARGET // config.size)
    side = config.size * zoom
    panel = pygame.Rect(PAD, PAD + CAPTION_HEIGHT, side + 2 * CANVAS_MARGIN, side + 2 * CANVAS_MARGIN)
    canvas = CanvasView(config, (panel.x + CANVAS_MARGIN, panel.y + CANVAS_MARGIN), zoom)

    scales, g = config.scales, config.glimpse_size
    rows = 1 if scales == 1 else 2
    columns = -(-scales // rows)
    cell_height = (CAPTION_HEIGHT + panel.height - (rows - 1) * GLIMPSE_GAP) // rows  # caption + patch
    glimpse_zoom = max(1, min(cell_height - CAPTION_HEIGHT, panel.height) // g)
    patch = g * glimpse_zoom
    left = panel.right + 2 * PAD
    glimpse_rects = tuple(
        pygame.Rect(
            left + (scale % columns) * (patch + GLIMPSE_GAP),
            PAD + (scale // columns) * (cell_height + GLIMPSE_GAP) + CAPTION_HEIGHT,
            patch,
            patch,
        )
        for scale in range(scales)
    )
    width = max(left + columns * patch + (columns - 1) * GLIMPSE_GAP + 2 * PAD, MIN_FRAME_WIDTH)
    bottom = max(panel.bottom, max(rect.bottom for rect in glimpse_rects))
    status = pygame.Rect(PAD, bottom + PAD, width - 2 * PAD, STATUS_HEIGHT + note_lines * NOTE_HEIGHT)
    height = status.bottom + PAD
    width, height = width + width % 2, height + height % 2  # even sides, as video encoders want
    return FrameLayout(width, height, canvas, panel, glimpse_zoom, glimpse_rects, status)


# ---------------------------------------------------------------------------------------------------- frames
@dataclass(frozen=True)
class FrameView:
    """What one frame shows. :func:`episode_view` makes it from an env; the play window makes its own.

    ``canvas``: the picture in the canvas panel (``size x size``, uint8 or ``[0, 1]``); ``unseen``: pixels to paint
    as not seen (the play window hides the canvas); ``locations``: ``n x 2``, the glimpses so far, the last being
    ``glimpse`` (``k x g x g``); ``probabilities``: class probabilities to draw as bars; ``prediction``: the named
    class; ``label``: the true class, once the episode is over; ``next_location``: a cursor; ``notes``: text lines
    under the status; ``other_locations``: another player's glimpse path on the same canvas (the agent's, beside a
    person's), drawn in AGENT_PATH_COLOUR; ``bars_caption``: what the probability bars are captioned.
    """

    config: GlimpseConfig
    canvas: np.ndarray
    locations: np.ndarray
    glimpse: np.ndarray
    unseen: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    prediction: int | None = None
    label: int | None = None
    next_location: np.ndarray | None = None
    notes: tuple[str, ...] = ()
    other_locations: np.ndarray | None = None
    bars_caption: str = "class probabilities"


def draw_status(surface: pygame.Surface, rect: pygame.Rect, view: FrameView) -> None:
    """The status strip: glimpse count and location, prediction, outcome, probability bars and notes."""
    config, glimpses = view.config, len(view.locations)
    over = view.label is not None
    headline = f"done: {glimpses} glimpses" if over else f"glimpse {glimpses} of {config.n_glimpses}"
    draw_text(surface, headline, (rect.x, rect.y), 28, bold=True)
    if glimpses:
        x, y = view.locations[-1]
        draw_text(surface, f"at (x, y) = ({x:+.2f}, {y:+.2f})", (rect.x + 4, rect.y + 30), 20, NOTE_COLOUR)
    if over and view.prediction is not None:
        right = view.prediction == view.label
        verdict = "right" if right else "wrong"
        text = f"label {view.label}, predicted {view.prediction}: {verdict}"
        draw_text(surface, text, (rect.x, rect.y + 56), 26, RIGHT_COLOUR if right else WRONG_COLOUR, bold=True)
    elif over:
        draw_text(surface, f"label {view.label}", (rect.x, rect.y + 56), 26, bold=True)
    elif view.prediction is not None:
        confidence = "" if view.probabilities is None else f" ({view.probabilities[view.prediction]:.0%})"
        draw_text(surface, f"prediction {view.prediction}{confidence}", (rect.x, rect.y + 56), 26)
    else:
        draw_text(surface, "no prediction yet", (rect.x, rect.y + 56), 26, NOTE_COLOUR)
    if view.probabilities is not None:
        bars_width = NUM_CLASSES * (BAR_WIDTH + BAR_GAP) - BAR_GAP
        left = rect.right - bars_width
        draw_text(surface, view.bars_caption, (left, rect.y), 18, NOTE_COLOUR)
        draw_probability_bars(surface, (left, rect.y + STATUS_HEIGHT - 4), view.probabilities, view.label)
    for line, note in enumerate(view.notes):
        draw_text(surface, note, (rect.x, rect.y + STATUS_HEIGHT + line * NOTE_HEIGHT), 20, NOTE_COLOUR)


def draw_frame(view: FrameView, layout: FrameLayout | None = None) -> pygame.Surface:
    """The whole frame of ``view`` (see the module docstring) on a new surface."""
    layout = layout or frame_layout(view.config, len(view.notes))
    surface = pygame.Surface(layout.size)
    surface.fill(BACKGROUND)
    config = view.config
    caption = f"canvas {config.size}x{config.size}" + (" (hidden)" if view.unseen is not None else "")
    draw_text(surface, caption, (layout.canvas_panel.x, PAD + 3), 18, NOTE_COLOUR)
    draw_canvas(surface, layout.canvas, view.canvas, view.unseen)
    draw_glimpse_path(surface, layout.canvas, view.locations, boxes="current")
    if view.other_locations is not None:
        draw_glimpse_path(surface, layout.canvas, view.other_locations, boxes="none", colour=AGENT_PATH_COLOUR)
    if view.next_location is not None:
        draw_cursor(surface, layout.canvas, view.next_location)
    draw_glimpse_scales(surface, layout.glimpse_rects, view.glimpse, layout.glimpse_zoom, config)
    draw_status(surface, layout.status, view)
    return surface


def episode_view(env: Any, notes: tuple[str, ...] = ()) -> FrameView:
    """The :class:`FrameView` of a ``GlimpseMNIST-v0`` env's current episode (the canvas shown)."""
    env = env.unwrapped
    scores, outcome = env.prediction, env.outcome
    probabilities = None if scores is None else softmax(scores)
    return FrameView(
        config=env.config,
        canvas=env.canvas,
        locations=env.glimpse_locations,
        glimpse=env.last_glimpse,
        probabilities=probabilities,
        prediction=None if scores is None else int(np.argmax(scores)),
        label=None if outcome is None else outcome["label"],
        notes=notes,
    )


def render_frame(env: Any) -> np.ndarray:
    """The RGB frame (``H x W x 3`` uint8) of a ``GlimpseMNIST-v0`` env's current episode."""
    return surface_to_array(draw_frame(episode_view(env)))


# ---------------------------------------------------------------------------------------------------- window
@dataclass
class Window:
    """A pygame window showing frames (``render_mode="human"``)."""

    screen: pygame.Surface
    clock: pygame.time.Clock


def show_frame(frame: np.ndarray, fps: float, window: Window | None) -> Window:
    """Show ``frame`` in the window (opening it on first use), then wait to keep ``fps`` frames per second."""
    size = (frame.shape[1], frame.shape[0])
    if window is None or not pygame.display.get_init() or pygame.display.get_surface() is None:
        pygame.display.init()
        screen = pygame.display.set_mode(size)
        pygame.display.set_caption("GlimpseMNIST-v0")
        window = Window(screen, pygame.time.Clock())
    elif window.screen.get_size() != size:
        window.screen = pygame.display.set_mode(size)
    pygame.event.pump()  # keep the window responsive
    window.screen.blit(array_to_surface(frame), (0, 0))
    pygame.display.flip()
    window.clock.tick(fps)
    return window


def close_window(window: Window | None) -> None:
    """Close the window of :func:`show_frame`."""
    if window is not None and pygame.display.get_init():
        pygame.display.quit()
