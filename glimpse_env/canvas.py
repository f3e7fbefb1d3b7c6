"""Canvases: plain, translated and cluttered MNIST, built in batches on any torch device.

A canvas is ``size x size`` uint8. The digit sits uniformly at random fully inside it (``size == 28``: exactly on
it). Each of ``clutter`` distractors is a random 8x8 crop of another random digit of the same split, pasted at a
uniform position fully inside the canvas; everything is summed and clipped to 255, as DeepMind's mnist-cluttered
generator does.

Where things go is a :class:`Layout`. Training layouts are drawn fresh for each episode from the env's generator;
evaluation splits (``validation`` and ``test``) use one fixed layout per dataset index, drawn once from a fixed
seed, so a given index always gives the same canvas whatever the env seed or the order of episodes: everyone
evaluates on the same canvases.

Glimpses are read from summed-area tables (:mod:`glimpse_env.retina`). Without clutter a canvas is just its digit
shifted, so :func:`canvas_integrals` reuses the tables of the dataset's digits, computed once per process, and an
episode costs nothing to set up; with clutter the canvas is composed and summed once per episode: on the CPU by a
compiled kernel (:mod:`glimpse_env.cpu_kernels`) in one pass per canvas, which writes the same tables, bit for bit,
as :func:`compose` and :func:`glimpse_env.retina.integral_image` (the torch path, which defines them).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from glimpse_env import cpu_kernels
from glimpse_env.config import MNIST_SIDE
from glimpse_env.data import DigitSet
from glimpse_env.retina import IntegralImage, integral_image, wraps_exactly

DISTRACTOR_SIDE = 8
EVALUATION_LAYOUT_SEED = 20140624  # fixed: evaluation canvases are the same for everyone


@dataclass(frozen=True)
class Layout:
    """Where the digit and the distractors of each canvas go (all int64 tensors on one device).

    ``digit_offset``: ``B x 2`` (x, y) of the digit's top-left pixel. ``distractor_source``: ``B x N`` dataset
    indices. ``distractor_crop``: ``B x N x 2`` (x, y) of the crop inside its source digit.
    ``distractor_offset``: ``B x N x 2`` (x, y) where the crop is pasted.
    """

    digit_offset: torch.Tensor
    distractor_source: torch.Tensor
    distractor_crop: torch.Tensor
    distractor_offset: torch.Tensor

    def __getitem__(self, rows: torch.Tensor | slice) -> Layout:
        return Layout(
            self.digit_offset[rows],
            self.distractor_source[rows],
            self.distractor_crop[rows],
            self.distractor_offset[rows],
        )


def traceable(generator: torch.Generator | None) -> torch.Generator | None:
    """``generator``, or None (the default stream) inside ``torch.compile``, which cannot trace an explicit one.

    A CUDA graph needs neither: it replays draws from a generator registered with it
    (``CUDAGraph.register_generator_state``), so eager and captured steps use the same stream."""
    return None if torch.compiler.is_compiling() else generator


def random_layout(
    batch: int, size: int, clutter: int, num_digits: int, generator: torch.Generator, device: torch.device
) -> Layout:
    """``batch`` layouts drawn uniformly with ``generator`` (which must live on ``device``)."""
    generator = traceable(generator)

    def uniform(high_inclusive: int, *shape: int) -> torch.Tensor:
        return torch.randint(0, high_inclusive + 1, shape, generator=generator, device=device)

    return Layout(
        digit_offset=uniform(size - MNIST_SIDE, batch, 2),
        distractor_source=uniform(num_digits - 1, batch, clutter),
        distractor_crop=uniform(MNIST_SIDE - DISTRACTOR_SIDE, batch, clutter, 2),
        distractor_offset=uniform(size - DISTRACTOR_SIDE, batch, clutter, 2),
    )


def evaluation_layouts(num_digits: int, size: int, clutter: int, device: torch.device) -> Layout:
    """The fixed layout of every index of an evaluation split (drawn on the CPU, so identical on any device)."""
    generator = torch.Generator().manual_seed(EVALUATION_LAYOUT_SEED + 1000 * size + clutter)
    layout = random_layout(num_digits, size, clutter, num_digits, generator, torch.device("cpu"))
    return Layout(*(field.to(device) for field in vars(layout).values()))


def compose(digits: DigitSet, indices: torch.Tensor, layout: Layout, size: int) -> torch.Tensor:
    """Canvases (``B x size x size`` uint8) of the digits at ``indices`` placed as ``layout`` says."""
    batch, device = indices.shape[0], indices.device
    canvas = torch.zeros(batch, size * size, dtype=torch.int32, device=device)

    def paste(pixels: torch.Tensor, offset: torch.Tensor, side: int) -> None:
        # pixels: B x M x side*side values; offset: B x M x 2 top-left (x, y) on the canvas.
        rows = torch.arange(side, device=device)
        patch = rows[:, None] * size + rows[None, :]  # side x side flat offsets of a patch at (0, 0)
        start = offset[..., 1] * size + offset[..., 0]  # B x M
        flat = (start[..., None] + patch.reshape(-1)).reshape(batch, -1)
        canvas.scatter_add_(1, flat, pixels.reshape(batch, -1).to(torch.int32))

    paste(digits.images[indices].reshape(batch, 1, -1), layout.digit_offset[:, None, :], MNIST_SIDE)
    clutter = layout.distractor_source.shape[1]
    if clutter:
        rows = torch.arange(DISTRACTOR_SIDE, device=device)
        crop = layout.distractor_crop  # B x N x 2
        ys = (crop[..., 1, None] + rows)[..., :, None]  # B x N x 8 x 1
        xs = (crop[..., 0, None] + rows)[..., None, :]  # B x N x 1 x 8
        sources = digits.images[layout.distractor_source]  # B x N x 28 x 28
        pieces = sources.reshape(batch, clutter, -1).gather(2, (ys * MNIST_SIDE + xs).reshape(batch, clutter, -1))
        paste(pieces, layout.distractor_offset, DISTRACTOR_SIDE)
    return canvas.clamp_(max=255).to(torch.uint8).view(batch, size, size)


@lru_cache(maxsize=8)
def digit_integrals(digits: DigitSet) -> IntegralImage:
    """Summed-area tables of every digit of ``digits``, computed once per digit set (and device)."""
    return integral_image(digits.images)


# Cluttered canvases are composed and summed this many at a time: a chunk's buffers stay in the CPU's cache and are
# reused, where a whole batch's (100 MB for 1,280 canvases of 100x100) would be paged in anew at every reset
# (measured: 2.3x faster for 1,280 canvases of 100x100, 1.3x for 60x60, on a 2-core AMD EPYC).
CANVAS_CHUNK = 128


def canvas_integrals(
    digits: DigitSet,
    indices: torch.Tensor,
    layout: Layout,
    size: int,
    reuse: torch.Tensor | None = None,
    scales: int | None = None,
) -> IntegralImage:
    """Summed-area tables of the canvases :func:`compose` would draw, without drawing them when there is no clutter.

    ``reuse``: a table this function returned before and nobody needs any more (the batched env's previous reset);
    when its shape and dtype fit, the new tables are written over it instead of into fresh memory (1.6x faster for
    1,280 canvases of 100x100: 50 MB less to page in at every reset).

    ``scales``: the retina's scales, when the caller knows them. Where the CPU kernel sums the canvases and glimpses
    of that many scales stay exact (:func:`glimpse_env.retina.wraps_exactly`), the tables come wrapped, as int16
    (:func:`glimpse_env.retina.wrap_table` of the torch path's): half the memory to write now and to read at every
    glimpse, the same glimpses."""
    if layout.distractor_source.shape[1] == 0:
        return digit_integrals(digits).select(indices, layout.digit_offset, size, size)
    if cpu_kernels.runs_on(digits.images, indices) and _kernel_fits(digits, indices, layout, size):
        wrapped = scales is not None and wraps_exactly(scales)
        dtype = torch.int16 if wrapped else torch.float32 if 255 * size * size < 2**24 else torch.float64
        shape = (len(indices), size + 1, size + 1)
        fits = reuse is not None and reuse.shape == shape and reuse.dtype == dtype and reuse.device.type == "cpu"
        table = reuse if fits and reuse.is_contiguous() else torch.empty(shape, dtype=dtype)
        fields = (layout.digit_offset, layout.distractor_source, layout.distractor_crop, layout.distractor_offset)
        cpu_kernels.canvas_tables(digits.images, indices, *fields, DISTRACTOR_SIDE, table)
        return IntegralImage(table, 1.0 / 255.0, size, size)
    return _torch_canvas_integrals(digits, indices, layout, size, reuse)


def _kernel_fits(digits: DigitSet, indices: torch.Tensor, layout: Layout, size: int) -> bool:
    """Whether the kernel can sum these canvases: uint8 digits, every index and piece in range (the kernel checks
    nothing; the torch path raises its own errors), sums within int32, at most 127 distractors."""
    too_many = layout.distractor_source.shape[1] > 127  # the kernel pastes into int16
    if digits.images.dtype != torch.uint8 or len(indices) == 0 or 255 * size * size >= 2**31 or too_many:
        return False
    ranges = (
        (indices, len(digits) - 1),
        (layout.distractor_source, len(digits) - 1),
        (layout.digit_offset, size - MNIST_SIDE),
        (layout.distractor_crop, MNIST_SIDE - DISTRACTOR_SIDE),
        (layout.distractor_offset, size - DISTRACTOR_SIDE),
    )
    batch, clutter = layout.distractor_source.shape
    shapes = (layout.digit_offset.shape, layout.distractor_crop.shape, layout.distractor_offset.shape)
    if batch != len(indices) or shapes != ((batch, 2), (batch, clutter, 2), (batch, clutter, 2)):
        return False
    return all(0 <= int(tensor.min()) and int(tensor.max()) <= high for tensor, high in ranges)


def _torch_canvas_integrals(
    digits: DigitSet, indices: torch.Tensor, layout: Layout, size: int, reuse: torch.Tensor | None
) -> IntegralImage:
    """The definition: :func:`compose` and :func:`integral_image`, a chunk at a time."""
    first = integral_image(compose(digits, indices[:CANVAS_CHUNK], layout[:CANVAS_CHUNK], size))
    if len(indices) <= CANVAS_CHUNK:
        return first
    shape = (len(indices), *first.table.shape[1:])
    fits = reuse is not None and reuse.shape == shape and reuse.dtype == first.table.dtype
    table = reuse if fits else first.table.new_empty(shape)
    table[:CANVAS_CHUNK] = first.table
    for start in range(CANVAS_CHUNK, len(indices), CANVAS_CHUNK):
        chunk = slice(start, start + CANVAS_CHUNK)
        table[chunk] = integral_image(compose(digits, indices[chunk], layout[chunk], size)).table
    return first._replace(table=table)
