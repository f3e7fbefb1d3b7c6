"""The pygame building blocks of every picture of an episode: colours, text, the magnified canvas with glimpse
boxes and paths, the cursor, each scale's patch, the foveated glimpse, probability bars.

Scale ``i`` has colour :func:`scale_colour` everywhere (its box on the canvas, the frame of its patch). The canvas
sits in a dark margin, so that boxes reaching past its edge (where the retina reads zeros) stay visible. All boxes
come from :func:`glimpse_env.retina.glimpse_boxes` (through :class:`CanvasView`), the geometry the retina itself
reads, and pictures are magnified by whole numbers, so every drawn box lies exactly on the pixels the agent saw.

:mod:`glimpse_env.render` composes them into frames (``render()``, the play window); ``agents.figures`` into the
figures of a trained agent. Everything draws on plain pygame surfaces, which needs no display.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # noqa: E402  (after silencing pygame's greeting)

from glimpse_env.config import GlimpseConfig  # noqa: E402
from glimpse_env.pixels import foveated_boxes, foveated_image, magnify, to_uint8  # noqa: E402
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

CAPTION_HEIGHT = 22  # a caption line above a panel
CANVAS_MARGIN = 16  # the dark margin around the canvas, in picture pixels
BOX_WIDTH = 2  # line width of a scale box, drawn inside the box's pixels
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
