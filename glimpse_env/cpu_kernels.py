"""Compiled CPU kernels (numba) for the two hot loops of a cluttered episode: summing canvases, reading glimpses.

Both are accelerated versions of the torch code that defines them, and tested equal to it bit for bit:

* :func:`canvas_tables` writes the summed-area tables that ``integral_image(compose(...))`` gives
  (:func:`glimpse_env.canvas.canvas_integrals`), one canvas at a time: its pieces are pasted into a buffer that
  stays in the cache, and each row, clipped to 255, is summed into a running column total that is the table's row.
  A row costs a prefix sum only over the columns its pieces cover (beyond them the sum is constant), and the
  next canvases' pieces (random digits: cache misses) are prefetched meanwhile.
* :func:`read_glimpses` reads glimpses from summed-area tables as
  :func:`glimpse_env.retina.glimpse_from_integral` does, the next table's corners prefetched while this one's
  are summed (the reads are memory-bound: a batch's tables are far larger than the cache).

Tables may be float32/float64 or int16 "wrapped" (sums modulo ``2**16``, :func:`glimpse_env.retina.wrap_table`):
half the bytes to write at a reset and to fetch at every glimpse.

Everything here runs on CPU tensors; callers fall back to torch elsewhere, when numba is missing, or inside
:func:`disabled` (how the benchmarks time the torch path, and how the tests compare the two). Kernels compile once
per process, at first use (``cache=True`` keeps the machine code in ``__pycache__`` for the next process).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np
import torch

try:
    import numba
    from llvmlite import ir
    from numba.core import cgutils
    from numba.extending import intrinsic, overload
except ImportError:  # the torch path serves everything
    numba = None

ENV_DISABLE = "GLIMPSE_NO_CPU_KERNELS"  # set to 1 to use the torch path everywhere
_enabled = numba is not None and os.environ.get(ENV_DISABLE, "") in ("", "0")


def available() -> bool:
    """Whether the kernels are used: numba is installed, and neither ``GLIMPSE_NO_CPU_KERNELS=1`` nor
    :func:`disabled` turned them off."""
    return _enabled


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within this block everything runs the torch path (the definition the kernels are tested against)."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def runs_on(*tensors: torch.Tensor) -> bool:
    """Whether the kernels serve these tensors: enabled, all on the CPU, none needing gradients."""
    return _enabled and all(t.device.type == "cpu" and not t.requires_grad for t in tensors)


if numba is not None:

    @intrinsic
    def _prefetch(typingctx, array, y, x):
        """Asks the CPU to start loading ``array[y, x]`` into its L2 cache (no fault if never used)."""

        def codegen(context, builder, signature, args):
            array_type = signature.args[0]
            view = context.make_array(array_type)(context, builder, args[0])
            pointer = cgutils.get_item_pointer(context, builder, array_type, view, args[1:], wraparound=False)
            byte_pointer = builder.bitcast(pointer, ir.IntType(8).as_pointer())
            name = "llvm.prefetch.p0" if getattr(byte_pointer.type, "is_opaque", False) else "llvm.prefetch.p0i8"
            i32 = ir.IntType(32)
            function_type = ir.FunctionType(ir.VoidType(), [byte_pointer.type, i32, i32, i32])
            function = cgutils.get_or_insert_function(builder.module, function_type, name)
            # Into L2 (locality 2), not L1: measured 1.8x faster reads than prefetching into L1 on an AMD EPYC,
            # where L1 prefetches wait for its few miss buffers while L2 keeps far more loads in flight.
            builder.call(function, [byte_pointer, i32(0), i32(2), i32(1)])  # read, locality 2, data
            return context.get_dummy_value()

        return numba.types.void(array, y, x), codegen

    def _widen(value):
        """A table entry as the type its differences are taken in (int16 -> int32; floats as they are)."""

    def _box_value(total):
        """A box's sum as float32: wrapped (int) sums are taken modulo 2**16 first."""

    @overload(_widen)
    def _widen_impl(value):
        if isinstance(value, numba.types.Integer):
            return lambda value: np.int32(value)
        return lambda value: value

    def _difference_buffer(table, length):
        """An array of ``length`` in the type that :func:`_widen` gives for ``table``'s entries."""

    @overload(_difference_buffer)
    def _difference_buffer_impl(table, length):
        if isinstance(table.dtype, numba.types.Integer):
            return lambda table, length: np.empty(length, np.int32)
        return lambda table, length: np.empty(length, table.dtype)

    @overload(_box_value)
    def _box_value_impl(total):
        if isinstance(total, numba.types.Integer):
            return lambda total: np.float32(total & 0xFFFF)
        return lambda total: np.float32(total)

    @numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
    def _prefetch_pieces(images, indices, sources, crops, piece, b):
        """Starts loading canvas ``b``'s digit and distractor crops (from random digits: cache misses)."""
        image = images[indices[b]]
        for y in range(0, image.shape[0], 2):  # two rows of 28 bytes are less than a cache line
            _prefetch(image, y, 0)
        _prefetch(image, image.shape[0] - 1, image.shape[1] - 1)
        for n in range(sources.shape[1]):
            source, cx, cy = images[sources[b, n]], crops[b, n, 0], crops[b, n, 1]
            for y in range(piece):
                _prefetch(source, cy + y, cx)
                _prefetch(source, cy + y, cx + piece - 1)

    # Index arithmetic below goes through views indexed from 0: with a possibly negative index numba wraps it
    # around at every access, which keeps LLVM from vectorizing the loop.
    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _table_kernel(images, indices, digit_offset, sources, crops, offsets, piece, out):
        side, size, batch = images.shape[1], out.shape[1] - 1, indices.shape[0]
        canvas = np.zeros((size, size), np.int16)  # the pieces pasted, before clipping; zero outside them
        low = np.empty(size, np.int64)  # each row's first and last-plus-one column covered by a piece
        high = np.empty(size, np.int64)
        total = np.zeros(size + 1, np.int32)  # column sums of the clipped rows so far: the table's last row
        ahead = 2  # canvases whose pieces are prefetched ahead (measured: 1.2-1.3x faster for 1,280 canvases)
        for b in range(min(ahead, batch)):
            _prefetch_pieces(images, indices, sources, crops, piece, b)
        for b in range(batch):
            if b + ahead < batch:
                _prefetch_pieces(images, indices, sources, crops, piece, b + ahead)
            low[:] = size
            high[:] = 0
            image, dx, dy = images[indices[b]], digit_offset[b, 0], digit_offset[b, 1]
            for y in range(side):
                segment, pixels = canvas[dy + y, dx : dx + side], image[y]
                for x in range(side):
                    segment[x] += np.int16(pixels[x])
                low[dy + y], high[dy + y] = dx, dx + side
            for n in range(sources.shape[1]):
                px, py, cx, cy = offsets[b, n, 0], offsets[b, n, 1], crops[b, n, 0], crops[b, n, 1]
                source = images[sources[b, n]]
                for y in range(piece):
                    segment, pixels = canvas[py + y, px : px + piece], source[cy + y, cx : cx + piece]
                    for x in range(piece):
                        segment[x] += np.int16(pixels[x])
                    low[py + y], high[py + y] = min(low[py + y], px), max(high[py + y], px + piece)
            table = out[b]
            total[:] = 0
            table[0, :] = 0
            for y in range(size):
                start, stop = low[y], high[y]
                if start < stop:  # a prefix sum over the covered columns; beyond them it stays constant
                    running = 0
                    segment, sums = canvas[y, start:stop], total[start + 1 : stop + 1]
                    for x in range(stop - start):
                        running += min(np.int32(segment[x]), 255)
                        segment[x] = 0  # the buffer is zero again for the next canvas
                        sums[x] += running
                    rest = total[stop + 1 :]
                    for x in range(rest.shape[0]):
                        rest[x] += running
                line = table[y + 1]
                for x in range(size + 1):
                    line[x] = total[x]  # int32 -> float32 exactly, or -> int16 modulo 2**16

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _box_starts(centres, origins, b, glimpse_size, starts):
        """Top-left corners (x, y), in the table's own coordinates, of sample ``b``'s blocks at every scale: the
        geometry of :func:`glimpse_env.retina.glimpse_boxes`, less the image's origin when there is one."""
        for i in range(starts.shape[0]):
            for axis in range(2):
                start = centres[b, axis] - (glimpse_size << i) // 2
                starts[i, axis] = start - origins[b, axis] if origins.shape[0] else start

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _prefetch_corners(table, starts, glimpse_size):
        last_y, last_x = table.shape[0] - 1, table.shape[1] - 1
        line = 64 // table.itemsize  # entries per cache line
        for i in range(starts.shape[0]):
            step = 1 << i
            x0 = min(max(starts[i, 0], 0), last_x)
            x1 = min(max(starts[i, 0] + glimpse_size * step, 0), last_x)
            for r in range(glimpse_size + 1):
                y = min(max(starts[i, 1] + r * step, 0), last_y)
                for x in range(x0, x1 + line, line):
                    _prefetch(table, y, min(x, x1))

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _glimpse_kernel(tables, rows, centres, origins, norm, out):
        batch, scales, g = out.shape[0], out.shape[1], out.shape[2]
        last_y, last_x = tables.shape[1] - 1, tables.shape[2] - 1
        ahead = 4  # prefetch the corners of the table this many samples ahead (measured: 2 to 8 are alike)
        starts = np.empty((ahead + 1, scales, 2), np.int64)  # a ring of the samples' block corners
        xs = np.empty(g + 1, np.int64)
        upper = _difference_buffer(tables, g)  # the row of corners above, as differences along x
        for b in range(min(ahead, batch)):
            _box_starts(centres, origins, b, g, starts[b])
        for b in range(batch):
            if b + ahead < batch:
                slot = starts[(b + ahead) % (ahead + 1)]
                _box_starts(centres, origins, b + ahead, g, slot)
                _prefetch_corners(tables[rows[b + ahead] if rows.shape[0] else b + ahead], slot, g)
            table, start = tables[rows[b] if rows.shape[0] else b], starts[b % (ahead + 1)]
            for i in range(scales):
                step = 1 << i
                x0, y0 = start[i, 0], start[i, 1]
                for j in range(g + 1):  # clamping to the image is exact: outside it everything is black
                    xs[j] = min(max(x0 + j * step, 0), last_x)
                scale = norm[i]
                line = table[min(max(y0, 0), last_y)]
                left = _widen(line[xs[0]])
                for j in range(g):
                    right = _widen(line[xs[j + 1]])
                    upper[j] = right - left
                    left = right
                for r in range(g):
                    line = table[min(max(y0 + (r + 1) * step, 0), last_y)]
                    glimpse = out[b, i, r]
                    left = _widen(line[xs[0]])
                    for j in range(g):
                        right = _widen(line[xs[j + 1]])
                        column = right - left
                        left = right
                        glimpse[j] = _box_value(column - upper[j]) * scale
                        upper[j] = column


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().contiguous().numpy()


def canvas_tables(
    images: torch.Tensor,
    indices: torch.Tensor,
    digit_offset: torch.Tensor,
    sources: torch.Tensor,
    crops: torch.Tensor,
    offsets: torch.Tensor,
    piece: int,
    out: torch.Tensor,
) -> None:
    """Writes into ``out`` (``B x (size + 1) x (size + 1)``, float32, float64 or int16) the summed-area tables of
    the canvases: digit ``images[indices[b]]`` at ``digit_offset[b]``, and ``piece x piece`` crops at ``crops[b, n]``
    of ``images[sources[b, n]]`` pasted at ``offsets[b, n]``, summed and clipped to 255. The caller checks that
    every piece lies inside its image and canvas, that there are at most 127 pieces per canvas (sums before
    clipping stay within int16) and that ``out`` is contiguous: nothing is checked here."""
    # One thread, whatever torch's count: slices on a second thread ran slower, measured at 2 threads (torch's
    # OpenMP workers keep spinning on the other core for a while after each of the model's ops).
    per_canvas = (_array(tensor) for tensor in (images, indices, digit_offset, sources, crops, offsets))
    _table_kernel(*per_canvas, piece, out.numpy())


def read_glimpses(
    tables: torch.Tensor,
    rows: torch.Tensor | None,
    centres: torch.Tensor,
    origins: torch.Tensor | None,
    norm: torch.Tensor,
    glimpse_size: int,
) -> torch.Tensor:
    """Glimpses (float32, ``B x k x g x g``, ``k = len(norm)``) from ``tables`` (``M x (h + 1) x (w + 1)``): sample
    ``b`` reads table ``rows[b]`` (None: table ``b``) of an image placed at ``origins[b]`` (None: at 0), centred on
    the canvas pixel corner ``centres[b]`` (x, y); scale ``i`` is ``g x g`` blocks of side ``2**i``, times
    ``norm[i]``. Rows must lie in ``[0, M)`` (not checked here)."""
    out = torch.empty(len(centres), len(norm), glimpse_size, glimpse_size)
    rows_array = _array(rows) if rows is not None else np.empty(0, np.int64)  # empty: sample b reads table b
    origins_array = _array(origins) if origins is not None else np.empty((0, 2), np.int64)  # empty: all at 0
    _glimpse_kernel(_array(tables), rows_array, _array(centres), origins_array, _array(norm), out.numpy())
    return out
