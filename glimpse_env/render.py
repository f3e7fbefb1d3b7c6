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

Scale ``i`` has colour :func:`scale_colour` everywhere (its box on the canvas, the frame of its patch). The canvas
sits in a dark margin, so that boxes reaching past its edge (where the retina reads zeros) stay visible. All boxes
come from :func:`glimpse_env.retina.glimpse_boxes`, the geometry the retina itself reads, and the canvas and the
patches are magnified by whole numbers, so every drawn box lies exactly on the pixels the agent saw.

The building blocks (:class:`CanvasView`, :func:`draw_canvas`, :func:`draw_glimpse_path`, :func:`draw_cursor`,
:func:`draw_glimpse_scales`, :func:`draw_foveated_glimpse`, :func:`draw_status`, :func:`paint_glimpses`) are reused by
:mod:`glimpse_env.play` and ``train/visualize.py``. Everything draws on plain pygame surfaces, which needs no
display: ``render_mode="rgb_array"`` works headless, and ``"human"`` under ``SDL_VIDEODRIVER=dummy`` too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # noqa: E402  (after silencing pygame's greeting)

from glimpse_env.config import NUM_CLASSES, GlimpseConfig  # noqa: E402
from glimpse_env.retina import glimpse_boxes, location_to_pixel  # noqa: E402

Colour = tuple[int, int, int]

# Scale i's colour: red, amber, cyan, green, violet, orange (then again). Saturated, so that they stand out from
# the grey canvas and from each other.
SCALE_COLOURS: tuple[Colour, ...] = (
    (255, 64, 64),
    (255, 200, 0),
    (0, 190, 255),
    (90, 230, 90),
    (200, 110, 255),
    (255, 140, 40),
)
BACKGROUND: Colour = (24, 24, 30)
MARGIN_COLOUR: Colour = (48, 48, 58)  # the panel around the canvas: outside the canvas, the retina reads zeros
CANVAS_EDGE: Colour = (120, 120, 135)
UNSEEN_COLOUR: Colour = (62, 72, 98)  # hidden-canvas pixels no glimpse has covered yet
PATH_COLOUR: Colour = (235, 235, 235)
AGENT_PATH_COLOUR: Colour = (240, 80, 230)  # the agent's path beside a person's (play --versus): unlike any scale's
CURSOR_COLOUR: Colour = (255, 255, 255)
TEXT_COLOUR: Colour = (235, 235, 235)
NOTE_COLOUR: Colour = (170, 170, 185)
BAR_COLOUR: Colour = (110, 120, 150)
TOP_BAR_COLOUR: Colour = (255, 255, 255)
RIGHT_COLOUR: Colour = (80, 220, 110)
WRONG_COLOUR: Colour = (255, 90, 90)

PAD = 12  # around and between the parts of a frame
CAPTION_HEIGHT = 22  # a caption line above a panel
CANVAS_MARGIN = 16  # the dark margin around the canvas, in frame pixels
CANVAS_TARGET = 336  # the canvas is magnified by the largest whole number that keeps it at most this wide
GLIMPSE_GAP = 12  # between the patches of the scales
BOX_WIDTH = 2  # line width of a scale box, drawn inside the box's pixels
STATUS_HEIGHT = 96
NOTE_HEIGHT = 22
MIN_FRAME_WIDTH = 760
BAR_WIDTH, BAR_GAP, BAR_HEIGHT = 20, 6, 52


def scale_colour(scale: int) -> Colour:
    """The colour of retina scale ``scale`` (0: the finest) in every picture."""
    return SCALE_COLOURS[scale % len(SCALE_COLOURS)]


_fonts: dict[tuple[int, bool], pygame.font.Font] = {}


def font(size: int, bold: bool = False) -> pygame.font.Font:
    """pygame's default font at ``size`` points (initialising ``pygame.font`` when needed; no display required)."""
    if not pygame.font.get_init():
        pygame.font.init()
        _fonts.clear()  # fonts made before a pygame.quit() are dead
    key = (size, bold)
    if key not in _fonts:
        _fonts[key] = pygame.font.Font(None, size)
        _fonts[key].set_bold(bold)
    return _fonts[key]


def draw_text(
    surface: pygame.Surface, text: str, position: tuple[int, int], size: int = 20, colour: Colour = TEXT_COLOUR,
    bold: bool = False, anchor: Literal["topleft", "center", "midtop"] = "topleft",
) -> pygame.Rect:
    """Draw ``text`` with its ``anchor`` at ``position``; returns the rectangle it covers."""
    image = font(size, bold).render(text, True, colour)
    rect = image.get_rect(**{anchor: position})
    surface.blit(image, rect)
    return rect


# ---------------------------------------------------------------------------------------------------- pixels
def to_uint8(image: np.ndarray) -> np.ndarray:
    """Intensities in ``[0, 1]`` (a glimpse) as uint8 grey levels; uint8 input is returned as is."""
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def magnify(image: np.ndarray, zoom: int) -> np.ndarray:
    """``image`` (``H x W`` or ``H x W x 3``) with every pixel repeated ``zoom x zoom`` times."""
    return np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)


def image_surface(image: np.ndarray, zoom: int = 1, unseen: np.ndarray | None = None) -> pygame.Surface:
    """A surface of a grey image (``[0, 1]`` floats or uint8), magnified; ``unseen`` pixels get UNSEEN_COLOUR."""
    grey = to_uint8(image)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    if unseen is not None:
        rgb[unseen] = UNSEEN_COLOUR
    rgb = np.ascontiguousarray(magnify(rgb, zoom))
    return pygame.image.frombytes(rgb.tobytes(), (rgb.shape[1], rgb.shape[0]), "RGB")


def surface_to_array(surface: pygame.Surface) -> np.ndarray:
    """The surface as an ``H x W x 3`` uint8 RGB array (what ``render_mode="rgb_array"`` returns)."""
    return np.ascontiguousarray(pygame.surfarray.array3d(surface).transpose(1, 0, 2))


def array_to_surface(frame: np.ndarray) -> pygame.Surface:
    """The inverse of :func:`surface_to_array`."""
    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    return pygame.image.frombytes(frame.tobytes(), (frame.shape[1], frame.shape[0]), "RGB")


def paint_glimpses(
    height: int, width: int, glimpses: np.ndarray, boxes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Glimpses painted back where they were taken: what the retina has delivered, as one picture.

    ``glimpses``: ``n x k x g x g`` intensities; ``boxes``: ``n x k x 4`` pixel boxes ``(x0, y0, x1, y1)`` of each
    scale on a ``height x width`` target (e.g. from :func:`glimpse_boxes`; parts outside the target are cut off).
    Scale ``i`` is magnified ``2**i`` times to cover its box. Coarse scales are painted first and finer ones over
    them (so the sharpest view of a pixel wins); within a scale, later glimpses over earlier ones.
    Returns the picture (``height x width`` float32 in ``[0, 1]``) and the mask of painted pixels.
    """
    picture = np.zeros((height, width), dtype=np.float32)
    seen = np.zeros((height, width), dtype=bool)
    scales = glimpses.shape[1] if len(glimpses) else 0
    for scale in reversed(range(scales)):
        for glimpse, box in zip(glimpses, boxes, strict=True):
            x0, y0, x1, y1 = (int(value) for value in box[scale])
            left, top, right, bottom = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
            if left >= right or top >= bottom:
                continue
            patch = magnify(glimpse[scale], 2**scale)
            picture[top:bottom, left:right] = patch[top - y0 : bottom - y0, left - x0 : right - x0]
            seen[top:bottom, left:right] = True
    return picture, seen


def foveated_boxes(config: GlimpseConfig) -> np.ndarray:
    """The box of every scale (``k x 4``) relative to the largest scale's box, whose top-left corner is 0."""
    boxes = glimpse_boxes(torch.zeros(1, 2), config.size, config.size, config.glimpse_size, config.scales)[0].numpy()
    return boxes - np.tile(boxes[-1, :2], 2)


def foveated_image(glimpse: np.ndarray, config: GlimpseConfig) -> np.ndarray:
    """One glimpse (``k x g x g``) as the paper pictures it: every scale at full resolution, finer ones inside.

    The result is ``P x P`` with ``P = g * 2**(k - 1)`` (the largest scale's side), float32 in ``[0, 1]``; each
    pixel is a value of the observation.
    """
    boxes = foveated_boxes(config)
    side = int(boxes[-1, 2])
    picture, _ = paint_glimpses(side, side, glimpse[None], boxes[None])
    return picture


# ---------------------------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class CanvasView:
    """Where a ``size x size`` canvas is drawn: canvas pixel ``(x, y)`` covers frame pixels
    ``[ox + x * zoom, ox + (x + 1) * zoom)`` (rows likewise), with ``origin = (ox, oy)``."""

    config: GlimpseConfig
    origin: tuple[int, int]
    zoom: int

    @property
    def rect(self) -> pygame.Rect:
        """The frame pixels the canvas covers."""
        side = self.config.size * self.zoom
        return pygame.Rect(self.origin, (side, side))

    def boxes(self, locations: np.ndarray) -> np.ndarray:
        """Canvas-pixel boxes (``n x k x 4``, ``(x0, y0, x1, y1)``, end exclusive) of glimpses at ``locations``."""
        locations = torch.as_tensor(np.asarray(locations, dtype=np.float32).reshape(-1, 2))
        config = self.config
        return glimpse_boxes(locations, config.size, config.size, config.glimpse_size, config.scales).numpy()

    def box_rect(self, box: Sequence[int]) -> pygame.Rect:
        """The frame rectangle of a canvas-pixel box ``(x0, y0, x1, y1)``."""
        x0, y0, x1, y1 = (int(value) for value in box)
        ox, oy = self.origin
        return pygame.Rect(ox + x0 * self.zoom, oy + y0 * self.zoom, (x1 - x0) * self.zoom, (y1 - y0) * self.zoom)

    def point(self, location: np.ndarray) -> tuple[int, int]:
        """The frame pixel of a glimpse's centre (the pixel corner the retina centres it on)."""
        config = self.config
        pixel = location_to_pixel(torch.as_tensor(np.asarray(location, np.float32)[None]), config.size, config.size)
        cx, cy = (int(value) for value in pixel[0])
        return self.origin[0] + cx * self.zoom, self.origin[1] + cy * self.zoom

    def location_at(self, position: tuple[int, int]) -> np.ndarray:
        """The location ``(x, y)`` in ``[-1, 1]`` under frame pixel ``position`` (clipped to the canvas)."""
        side = self.config.size * self.zoom
        fraction = (np.asarray(position, dtype=np.float64) - self.origin + 0.5) / side
        return np.clip(fraction * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)


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


# ---------------------------------------------------------------------------------------------------- drawing
def draw_canvas(
    surface: pygame.Surface, view: CanvasView, canvas: np.ndarray, unseen: np.ndarray | None = None,
    margin: int = CANVAS_MARGIN,
) -> None:
    """The canvas magnified in its margin; ``unseen`` (bool mask) pixels painted as not seen yet."""
    surface.fill(MARGIN_COLOUR, view.rect.inflate(2 * margin, 2 * margin))
    surface.blit(image_surface(canvas, view.zoom, unseen), view.origin)
    pygame.draw.rect(surface, CANVAS_EDGE, view.rect.inflate(2, 2), 1)


def draw_scale_boxes(
    surface: pygame.Surface, view: CanvasView, location: np.ndarray, scales: Sequence[int] | None = None,
    colour: Colour | None = None, width: int = BOX_WIDTH,
) -> None:
    """The boxes each scale of a glimpse at ``location`` covers (largest first, so the finest lies on top)."""
    boxes = view.boxes(location)[0]
    scales = range(view.config.scales) if scales is None else scales
    for scale in sorted(scales, reverse=True):
        rect = view.box_rect(boxes[scale])
        pygame.draw.rect(surface, colour or scale_colour(scale), rect, width)


def draw_glimpse_path(
    surface: pygame.Surface, view: CanvasView, locations: np.ndarray,
    boxes: Literal["current", "each", "none"] = "current", colour: Colour | None = None,
) -> None:
    """The glimpse locations joined in order and numbered from 1, with their boxes.

    ``boxes="current"``: every scale's box around the last location (the current glimpse); ``"each"``: the finest
    scale's box around every location; ``"none"``: no boxes. ``colour``: None draws the path white with the last
    location ringed in the finest scale's colour; a colour draws the whole path in it (another player's path).
    Drawing stays inside the canvas margin.
    """
    locations = np.asarray(locations, dtype=np.float32).reshape(-1, 2)
    previous_clip = surface.get_clip()
    surface.set_clip(view.rect.inflate(2 * CANVAS_MARGIN, 2 * CANVAS_MARGIN).clip(previous_clip))
    if len(locations):
        if boxes == "current":
            draw_scale_boxes(surface, view, locations[-1])
        elif boxes == "each":
            for location in locations:
                draw_scale_boxes(surface, view, location, scales=[0])
        points = [view.point(location) for location in locations]
        line = colour or PATH_COLOUR
        if len(points) > 1:
            pygame.draw.lines(surface, line, False, points, 2)
        for number, point in enumerate(points, start=1):
            last = number == len(points) and colour is None
            pygame.draw.circle(surface, BACKGROUND, point, 9)
            pygame.draw.circle(surface, scale_colour(0) if last else line, point, 9, 2)
            draw_text(surface, str(number), (point[0], point[1] + 1), 16, TEXT_COLOUR, bold=True, anchor="center")
    surface.set_clip(previous_clip)


def draw_cursor(surface: pygame.Surface, view: CanvasView, location: np.ndarray) -> None:
    """Where the next glimpse will go: thin white boxes of every scale and a cross at the centre."""
    previous_clip = surface.get_clip()
    surface.set_clip(view.rect.inflate(2 * CANVAS_MARGIN, 2 * CANVAS_MARGIN).clip(previous_clip))
    draw_scale_boxes(surface, view, location, colour=CURSOR_COLOUR, width=1)
    x, y = view.point(location)
    pygame.draw.line(surface, CURSOR_COLOUR, (x - 7, y), (x + 7, y), 2)
    pygame.draw.line(surface, CURSOR_COLOUR, (x, y - 7), (x, y + 7), 2)
    surface.set_clip(previous_clip)


def draw_glimpse_scales(
    surface: pygame.Surface, rects: Sequence[pygame.Rect], glimpse: np.ndarray, zoom: int, config: GlimpseConfig
) -> None:
    """Each scale of ``glimpse`` (``k x g x g``) magnified ``zoom`` times into ``rects[i]``, framed in its colour
    and captioned with the canvas area it covers. The patch pixels are exactly the observation's."""
    for scale, rect in enumerate(rects):
        colour = scale_colour(scale)
        covered = config.glimpse_size * 2**scale
        caption = f"{covered}x{covered} px" + (f" seen as {config.glimpse_size}x{config.glimpse_size}" if scale else "")
        draw_text(surface, caption, (rect.x, rect.y - CAPTION_HEIGHT + 3), 18, colour)
        pygame.draw.rect(surface, colour, rect.inflate(2 * BOX_WIDTH + 2, 2 * BOX_WIDTH + 2), BOX_WIDTH)
        surface.blit(image_surface(glimpse[scale], zoom), rect.topleft)


def draw_foveated_glimpse(
    surface: pygame.Surface, position: tuple[int, int], glimpse: np.ndarray, config: GlimpseConfig, zoom: int
) -> None:
    """:func:`foveated_image` of ``glimpse`` magnified ``zoom`` times at ``position``, with a thin line in each
    scale's colour around the area that scale covers (the largest one just outside the picture)."""
    surface.blit(image_surface(foveated_image(glimpse, config), zoom), position)
    for scale, (x0, y0, x1, y1) in enumerate(foveated_boxes(config)):
        rect = pygame.Rect(position[0] + x0 * zoom, position[1] + y0 * zoom, (x1 - x0) * zoom, (y1 - y0) * zoom)
        pygame.draw.rect(surface, scale_colour(scale), rect.inflate(2, 2) if scale == config.scales - 1 else rect, 1)


def draw_probability_bars(
    surface: pygame.Surface, bottom_left: tuple[int, int], probabilities: np.ndarray, label: int | None = None
) -> None:
    """Ten bars of class probabilities, the most likely class in white; the digits under them (the label green)."""
    top = int(np.argmax(probabilities))
    x0, bottom = bottom_left
    for digit, probability in enumerate(probabilities):
        x = x0 + digit * (BAR_WIDTH + BAR_GAP)
        height = max(1, round(float(probability) * BAR_HEIGHT))
        colour = TOP_BAR_COLOUR if digit == top else BAR_COLOUR
        pygame.draw.rect(surface, colour, pygame.Rect(x, bottom - 18 - height, BAR_WIDTH, height))
        digit_colour = RIGHT_COLOUR if digit == label else TEXT_COLOUR
        draw_text(surface, str(digit), (x + BAR_WIDTH // 2, bottom - 16), 20, digit_colour, anchor="midtop")


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.asarray(scores, dtype=np.float64) - np.max(scores)
    exp = np.exp(shifted)
    return exp / exp.sum()


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
