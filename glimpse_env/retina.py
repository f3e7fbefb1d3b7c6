"""The glimpse sensor ("retina") of Mnih et al. 2014, batched in torch.

A glimpse at location ``l`` has ``k`` scales. Scale ``i`` covers a square of ``g * 2**i`` pixels centred on ``l``
and is reduced to ``g x g`` by area averaging (each output pixel is the mean of a ``2**i x 2**i`` block); pixels
outside the canvas count as 0.

Geometry (shared by the environments, the agent's training and every picture, through :func:`glimpse_boxes`):

* a location is ``(x, y)`` in ``[-1, 1]``; ``(-1, -1)`` is the top-left corner of the canvas, ``(1, 1)`` the
  bottom-right corner, ``(0, 0)`` the centre;
* on a ``H x W`` canvas the location maps to the pixel grid point ``cx = floor((x + 1) / 2 * W + 1/2)`` (and ``cy``
  likewise), so the centre of a glimpse always lies on a pixel corner;
* scale ``i`` covers columns ``[cx - p // 2, cx - p // 2 + p)`` with ``p = g * 2**i`` (rows likewise).

The work is split in two so that callers can do the expensive part once per episode: :func:`integral_image` turns
canvases into summed-area tables, after which :func:`glimpse_from_integral` reads any glimpse with
``k * (g + 1)**2`` gathers per sample, independent of the scale's size. :func:`retina` does both in one call.

On the CPU, reads go through a compiled kernel (:mod:`glimpse_env.cpu_kernels`) that gives the same glimpses, bit
for bit, as the torch code below, which defines them (and serves CUDA).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import torch

from glimpse_env import cpu_kernels

WRAP = 2**16  # int16 tables hold sums modulo this (see wrap_table)


class IntegralImage(NamedTuple):
    """Summed-area tables from which glimpses of a batch of ``height x width`` canvases are read.

    ``table[m, y, x]`` is the sum of image ``m``'s pixels above row ``y`` and left of column ``x`` (shape
    ``M x (h + 1) x (w + 1)``). Canvas ``b`` is image ``rows[b]`` (``None``: image ``b``) placed with its top-left
    pixel at ``origin[b] = (x, y)`` (``None``: at 0) on an otherwise black ``height x width`` canvas. So a batch of
    translated digits needs no per-episode work at all: the tables of the dataset's digits, shifted.
    ``value_scale`` turns a sum of stored values into intensities in ``[0, 1]``.

    ``table`` is float32 or float64, or int16 for tables of uint8 canvases "wrapped" modulo ``2**16``
    (:func:`wrap_table`): half the bytes, and every glimpse the same as from the exact table while its blocks sum
    below ``2**16`` (:func:`wraps_exactly`).
    """

    table: torch.Tensor
    value_scale: float
    height: int
    width: int
    rows: torch.Tensor | None = None
    origin: torch.Tensor | None = None

    def select(self, rows: torch.Tensor, origin: torch.Tensor, height: int, width: int) -> IntegralImage:
        """Canvases of images ``rows`` of this table placed at ``origin`` on ``height x width`` canvases."""
        return IntegralImage(self.table, self.value_scale, height, width, rows, origin)

    def repeat_interleave(self, repeats: int) -> IntegralImage:
        """The same canvases, each repeated ``repeats`` times in a row (canvas ``b`` becomes ``b // repeats``):
        M glimpse paths over one canvas read one table."""
        if repeats == 1:
            return self
        rows = self.rows if self.rows is not None else torch.arange(self.table.shape[0], device=self.table.device)
        origin = self.origin.repeat_interleave(repeats, dim=0) if self.origin is not None else None
        return self._replace(rows=rows.repeat_interleave(repeats), origin=origin)


def integral_image(canvases: torch.Tensor) -> IntegralImage:
    """Summed-area tables of ``canvases`` (``B x H x W``).

    ``uint8`` canvases (0..255) are summed in float32, which is exact while every sum stays below ``2**24`` (canvases
    up to 256 x 256; larger ones use float64); floating canvases (intensities in ``[0, 1]``) in float64, so that
    differences of large sums stay accurate.
    """
    if canvases.dim() != 3:
        raise ValueError(f"canvases must have shape (B, H, W), got {tuple(canvases.shape)}")
    batch, height, width = canvases.shape
    if canvases.dtype == torch.uint8:
        exact_in_float32 = 255 * height * width < 2**24
        dtype, value_scale = (torch.float32 if exact_in_float32 else torch.float64), 1.0 / 255.0
    elif canvases.is_floating_point():
        dtype, value_scale = torch.float64, 1.0
    else:
        raise ValueError(f"canvases must be uint8 or floating point, got {canvases.dtype}")
    table = torch.zeros(batch, height + 1, width + 1, dtype=dtype, device=canvases.device)
    table[:, 1:, 1:] = canvases
    torch.cumsum(table, dim=1, out=table)
    torch.cumsum(table, dim=2, out=table)
    return IntegralImage(table, value_scale, height, width)


def wraps_exactly(scales: int) -> bool:
    """Whether glimpses of ``scales`` scales read from wrapped tables of uint8 canvases equal the exact tables'
    glimpses: the largest block (side ``2**(scales - 1)``) then sums to less than ``2**16`` (up to 5 scales)."""
    return 255 * 4 ** (scales - 1) < WRAP


def wrap_table(integral: IntegralImage) -> IntegralImage:
    """The same canvases with their table stored modulo ``2**16`` as int16 (the two's-complement bits of the low 16
    bits of each sum). A box's sum is then the difference of its corners modulo ``2**16``: exact while it is below
    ``2**16``. Defined for tables of uint8 canvases (float32 or float64 holding integers)."""
    if integral.table.is_floating_point() and integral.value_scale == 1.0 / 255.0:
        return integral._replace(table=integral.table.to(torch.int64).to(torch.int16))  # truncation: modulo 2**16
    raise ValueError(f"only tables of uint8 canvases can be wrapped, got a {integral.table.dtype} table")


def location_to_pixel(locations: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel grid points ``(cx, cy)`` (int64, ``B x 2``) of locations ``(x, y)`` in ``[-1, 1]``."""
    extent = torch.tensor([width, height], dtype=locations.dtype, device=locations.device)
    return torch.floor((locations + 1.0) * 0.5 * extent + 0.5).long()


def glimpse_boxes(
    locations: torch.Tensor, height: int, width: int, glimpse_size: int, scales: int
) -> torch.Tensor:
    """Pixel boxes ``(x0, y0, x1, y1)`` (int64, ``B x k x 4``, end exclusive) that each scale covers.

    The boxes may reach outside the canvas. This is the geometry :func:`glimpse_from_integral` reads, exposed so
    that pictures draw exactly what the agent sees.
    """
    centre = location_to_pixel(locations, height, width)  # B x 2
    sides = glimpse_size * 2 ** torch.arange(scales, device=locations.device)  # k
    start = centre[:, None, :] - (sides // 2)[None, :, None]  # B x k x 2
    return torch.cat([start, start + sides[None, :, None]], dim=-1)


@lru_cache(maxsize=64)
def _block_norm(value_scale: float, scales: int, device: torch.device) -> torch.Tensor:
    """What a block's sum is multiplied by at each scale: the mean over its ``4**i`` pixels, as intensity."""
    steps = 2 ** torch.arange(scales, device=device)
    return (value_scale / steps.to(torch.float64) ** 2).to(torch.float32)


def _rows_fit(rows: torch.Tensor | None, batch: int, tables: int) -> bool:
    """Whether every sample reads one of the ``tables`` tables (else the torch path raises its own error)."""
    if rows is None:
        return batch <= tables
    return rows.shape == (batch,) and (batch == 0 or (int(rows.min()) >= 0 and int(rows.max()) < tables))


def glimpse_from_integral(
    integral: IntegralImage, locations: torch.Tensor, glimpse_size: int, scales: int
) -> torch.Tensor:
    """Glimpses (float32, ``B x k x g x g``) at ``locations`` (``B x 2``, clipped to ``[-1, 1]`` by the caller)."""
    table = integral.table
    wrapped = table.dtype == torch.int16
    if wrapped and not wraps_exactly(scales):
        raise ValueError(f"a wrapped (int16) table cannot give glimpses of {scales} scales exactly (at most 5)")
    table_h, table_w = table.shape[-2] - 1, table.shape[-1] - 1
    batch, device = locations.shape[0], locations.device
    g, k = glimpse_size, scales
    norm = _block_norm(integral.value_scale, k, device)
    if cpu_kernels.runs_on(table, locations) and _rows_fit(integral.rows, batch, len(table)):
        centres = location_to_pixel(locations, integral.height, integral.width)
        return cpu_kernels.read_glimpses(table, integral.rows, centres, integral.origin, norm, g)
    start = glimpse_boxes(locations, integral.height, integral.width, g, k)[..., :2]  # B x k x 2 (x, y)
    if integral.origin is not None:
        start = start - integral.origin[:, None, :]  # canvas coordinates -> the image's own table
    steps = 2 ** torch.arange(k, device=device)  # block side at each scale
    rows = integral.rows if integral.rows is not None else torch.arange(batch, device=device)
    grid = torch.arange(g + 1, device=device)[None, :] * steps[:, None]  # k x (g + 1) block corners
    # Clamping corner coordinates to the image is exact for summed-area tables: everything outside the image
    # (the rest of the canvas, and beyond it) is black and adds nothing to any sum.
    xs = (start[..., 0, None] + grid).clamp_(0, table_w)  # B x k x (g + 1)
    ys = (start[..., 1, None] + grid).clamp_(0, table_h)
    ys = ys * (table_w + 1) + (rows * table[0].numel()).view(batch, 1, 1)  # flat offset of each row of corners
    corners = torch.take(table, ys[..., :, None] + xs[..., None, :])  # B x k x (g + 1) x (g + 1)
    if wrapped:
        corners = corners.to(torch.int32)
    columns = corners[..., 1:] - corners[..., :-1]  # B x k x (g + 1) x g
    sums = columns[..., 1:, :] - columns[..., :-1, :]  # B x k x g x g
    if wrapped:
        sums = sums.bitwise_and_(WRAP - 1)  # the box's sum modulo 2**16, which is the sum itself
    return sums.to(torch.float32).mul_(norm[None, :, None, None])


def retina(canvases: torch.Tensor, locations: torch.Tensor, glimpse_size: int, scales: int) -> torch.Tensor:
    """Multi-resolution glimpses (``B x k x g x g``, float32) of ``canvases`` (``B x H x W``) at ``locations``.

    ``locations`` is ``B x 2`` with ``(x, y)`` in ``[-1, 1]`` (values outside are clipped). See the module's
    docstring for the exact geometry.
    """
    if locations.dim() != 2 or locations.shape[-1] != 2 or locations.shape[0] != canvases.shape[0]:
        raise ValueError(f"locations must have shape ({canvases.shape[0]}, 2), got {tuple(locations.shape)}")
    return glimpse_from_integral(integral_image(canvases), locations.clamp(-1.0, 1.0), glimpse_size, scales)
