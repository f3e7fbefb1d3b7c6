"""Pictures of glimpses as plain arrays (no pygame): grey levels, magnification, glimpses painted back where the
retina took them, and the paper's foveated view of one glimpse.

Every box comes from :func:`glimpse_env.retina.glimpse_boxes`, the geometry the retina itself reads, so a painted
glimpse lies exactly on the canvas pixels it averaged. :mod:`glimpse_env.drawing` and :mod:`glimpse_env.render`
draw these arrays on pygame surfaces.
"""

from __future__ import annotations

import numpy as np
import torch

from glimpse_env.config import GlimpseConfig
from glimpse_env.retina import glimpse_boxes


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Intensities in ``[0, 1]`` (a glimpse) as uint8 grey levels; uint8 input is returned as is."""
    if image.dtype == np.uint8:
        return image
    return np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def magnify(image: np.ndarray, zoom: int) -> np.ndarray:
    """``image`` (``H x W`` or ``H x W x 3``) with every pixel repeated ``zoom x zoom`` times."""
    return np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1)


def softmax(scores: np.ndarray) -> np.ndarray:
    """Class probabilities of class scores (float64, stable for large scores)."""
    shifted = np.asarray(scores, dtype=np.float64) - np.max(scores)
    exp = np.exp(shifted)
    return exp / exp.sum()


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


def finest_boxes(locations: torch.Tensor, config: GlimpseConfig) -> torch.Tensor:
    """The finest scale's canvas-pixel box ``(x0, y0, x1, y1)`` of glimpses at ``locations`` (``... x 2`` ->
    ``... x 4``), by :func:`glimpse_boxes`."""
    flat = glimpse_boxes(locations.reshape(-1, 2), config.size, config.size, config.glimpse_size, config.scales)
    return flat[:, 0].reshape(*locations.shape[:-1], 4)
