"""The summed-area-table retina against a plain, obviously-correct reference (pad, crop, average-pool)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from glimpse_env import cpu_kernels
from glimpse_env.data import DigitSet
from glimpse_env.retina import (
    glimpse_boxes,
    glimpse_from_integral,
    integral_image,
    retina,
    wrap_table,
    wraps_exactly,
)

CORNERS = [(-1.0, -1.0), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0), (0.0, 0.0), (-1.0, 0.3), (0.7, 1.0)]


def reference_box(x: float, y: float, height: int, width: int, side: int) -> tuple[int, int, int, int]:
    """The documented geometry: centre on the pixel corner ``floor((x + 1) / 2 * W + 1/2)``, side ``side``."""
    cx = math.floor((x + 1.0) / 2.0 * width + 0.5)
    cy = math.floor((y + 1.0) / 2.0 * height + 0.5)
    return cx - side // 2, cy - side // 2, cx - side // 2 + side, cy - side // 2 + side


def reference_retina(canvases: torch.Tensor, locations: torch.Tensor, g: int, k: int) -> torch.Tensor:
    """Zero-pad, crop each sample's box by slicing, ``avg_pool2d`` by the block side, one scale at a time."""
    images = canvases.double() / 255.0 if canvases.dtype == torch.uint8 else canvases.double()
    batch, height, width = images.shape
    pad = g * 2 ** (k - 1) + 2
    padded = F.pad(images, (pad, pad, pad, pad))
    clipped = [(min(max(x, -1.0), 1.0), min(max(y, -1.0), 1.0)) for x, y in locations.tolist()]
    scales = []
    for i in range(k):
        crops = []
        for b, (x, y) in enumerate(clipped):
            x0, y0, x1, y1 = reference_box(x, y, height, width, g * 2**i)
            crops.append(padded[b, y0 + pad : y1 + pad, x0 + pad : x1 + pad])
        scales.append(F.avg_pool2d(torch.stack(crops)[:, None], 2**i)[:, 0])
    return torch.stack(scales, dim=1)


def random_canvases(batch: int, height: int, width: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        return torch.randint(0, 256, (batch, height, width), generator=generator, dtype=torch.uint8)
    return torch.rand(batch, height, width, generator=generator, dtype=torch.float64).to(dtype)


def random_locations(batch: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 2, generator=generator) * 2.0 - 1.0


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("height", "width", "g", "k"),
    [(28, 28, 8, 1), (60, 60, 12, 3), (100, 100, 12, 4), (37, 53, 5, 2), (29, 31, 7, 3), (40, 40, 3, 4)],
)
def test_retina_matches_reference_at_random_locations(
    dtype: torch.dtype, height: int, width: int, g: int, k: int
) -> None:
    canvases = random_canvases(16, height, width, dtype, seed=height * width + g)
    locations = random_locations(16, seed=k)
    glimpses = retina(canvases, locations, g, k)
    assert glimpses.shape == (16, k, g, g) and glimpses.dtype == torch.float32
    torch.testing.assert_close(
        glimpses.double(), reference_retina(canvases, locations, g, k), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize(("g", "k"), [(8, 1), (12, 3), (5, 4), (1, 2)])
def test_retina_matches_reference_at_borders_and_corners(dtype: torch.dtype, g: int, k: int) -> None:
    canvases = random_canvases(len(CORNERS), 45, 45, dtype, seed=g * k)
    locations = torch.tensor(CORNERS)
    glimpses = retina(canvases, locations, g, k)
    torch.testing.assert_close(
        glimpses.double(), reference_retina(canvases, locations, g, k), atol=1e-5, rtol=0
    )
    # At (-1, -1) the glimpse is centred on the top-left corner: only its bottom-right quarter sees pixels.
    top_left = glimpses[0, 0]
    assert torch.all(top_left[: g // 2, :] == 0) and torch.all(top_left[:, : g // 2] == 0)


def test_retina_sees_a_single_pixel_exactly_where_the_geometry_says() -> None:
    canvas = torch.zeros(1, 60, 60, dtype=torch.uint8)
    canvas[0, 17, 41] = 255  # row 17, column 41
    # Location whose centre pixel corner is (cx, cy) = (41, 17): the pixel lies just right of and below it.
    location = torch.tensor([[41 / 30 - 1.0, 17 / 30 - 1.0]])
    glimpses = retina(canvas, location, 4, 3)
    for i in range(3):
        block = 2**i
        expected = torch.zeros(4, 4)
        expected[2, 2] = 1.0 / block**2  # the pixel sits in the block right/below the centre at every scale
        torch.testing.assert_close(glimpses[0, i], expected)


def test_locations_outside_the_square_are_clipped() -> None:
    canvases = random_canvases(3, 60, 60, torch.uint8, seed=1)
    outside = torch.tensor([[3.0, -7.0], [-1.5, 0.2], [0.4, 1.0001]])
    inside = outside.clamp(-1.0, 1.0)
    torch.testing.assert_close(
        retina(canvases, outside, 12, 3), retina(canvases, inside, 12, 3), atol=0, rtol=0
    )


def test_uniform_white_canvas_reads_exactly_one_inside_and_fractions_at_the_border() -> None:
    canvas = torch.full((2, 60, 60), 255, dtype=torch.uint8)
    glimpses = retina(canvas, torch.tensor([[0.0, 0.0], [1.0, 1.0]]), 12, 3)
    assert torch.all(glimpses[0, :2] == 1.0)  # 12 and 24 pixels around the centre lie inside the canvas
    assert torch.all(glimpses.max() <= 1.0) and torch.all(glimpses.min() >= 0.0)
    assert glimpses[1, 0].mean().item() == pytest.approx(
        0.25
    )  # at a corner a quarter of each scale is inside


def test_large_uint8_canvases_stay_exact() -> None:
    # 300 x 300 x 255 exceeds float32's exact integers: the table must switch to float64.
    canvas = torch.full((1, 300, 300), 255, dtype=torch.uint8)
    integral = integral_image(canvas)
    assert integral.table.dtype == torch.float64
    assert float(integral.table[0, -1, -1]) == 255 * 300 * 300
    glimpses = retina(canvas, torch.tensor([[0.1, -0.2]]), 12, 4)
    assert torch.all(glimpses == 1.0)


@pytest.mark.parametrize(("size", "g", "k"), [(60, 12, 3), (100, 12, 4), (28, 8, 1), (41, 5, 2)])
def test_translated_digits_through_select_equal_the_composed_canvas(
    tiny_digits: DigitSet, size: int, g: int, k: int
) -> None:
    generator = torch.Generator().manual_seed(size)
    batch = 24
    rows = torch.randint(0, len(tiny_digits), (batch,), generator=generator)
    rows[:3] = rows[0]  # the same digit in several slots
    origin = torch.randint(0, size - 28 + 1, (batch, 2), generator=generator)
    canvases = torch.zeros(batch, size, size, dtype=torch.uint8)
    for b in range(batch):
        x, y = int(origin[b, 0]), int(origin[b, 1])
        canvases[b, y : y + 28, x : x + 28] = tiny_digits.images[rows[b]]
    locations = random_locations(batch, seed=size + 1)
    locations[:4] = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]])

    table = integral_image(tiny_digits.images).select(rows, origin, size, size)
    from_table = glimpse_from_integral(table, locations, g, k)
    expected = retina(canvases, locations, g, k)
    torch.testing.assert_close(from_table, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        from_table.double(), reference_retina(canvases, locations, g, k), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize(("height", "width", "g", "k"), [(60, 60, 12, 3), (37, 53, 5, 4), (28, 28, 8, 1)])
def test_glimpse_boxes_agree_with_the_reference_crop(height: int, width: int, g: int, k: int) -> None:
    locations = torch.cat([random_locations(32, seed=height), torch.tensor(CORNERS)])
    boxes = glimpse_boxes(locations, height, width, g, k)
    assert boxes.shape == (len(locations), k, 4) and boxes.dtype == torch.int64
    for b, (x, y) in enumerate(locations.tolist()):
        for i in range(k):
            assert tuple(boxes[b, i].tolist()) == reference_box(x, y, height, width, g * 2**i)
    sides = boxes[..., 2:] - boxes[..., :2]
    assert torch.all(sides == (g * 2 ** torch.arange(k))[None, :, None])


def test_bad_shapes_and_dtypes_raise_value_error() -> None:
    canvases = torch.zeros(4, 28, 28, dtype=torch.uint8)
    good = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="locations"):
        retina(canvases, torch.zeros(4, 3), 8, 1)
    with pytest.raises(ValueError, match="locations"):
        retina(canvases, torch.zeros(3, 2), 8, 1)
    with pytest.raises(ValueError, match="locations"):
        retina(canvases, torch.zeros(4), 8, 1)
    with pytest.raises(ValueError, match="canvases"):
        retina(torch.zeros(28, 28, dtype=torch.uint8), torch.zeros(28, 2), 8, 1)
    with pytest.raises(ValueError, match="canvases"):
        retina(torch.zeros(4, 1, 28, 28), good, 8, 1)
    with pytest.raises(ValueError, match="canvases"):
        integral_image(torch.zeros(4, 28, 28, dtype=torch.int32))
    with pytest.raises(ValueError, match="canvases"):
        integral_image(torch.zeros(28, 28))


# --- wrapped (int16) tables, through the torch path that defines them
def test_wrapped_tables_keep_sums_modulo_2_16_and_know_their_limit() -> None:
    integral = integral_image(torch.full((2, 300, 300), 255, dtype=torch.uint8))
    wrapped = wrap_table(integral)
    assert wrapped.table.dtype == torch.int16
    assert torch.equal(wrapped.table.long() % 2**16, integral.table.long() % 2**16)  # beyond 2**15 too
    assert [wraps_exactly(k) for k in range(1, 7)] == [True] * 5 + [False]
    with pytest.raises(ValueError, match="scales"):
        glimpse_from_integral(wrapped, torch.zeros(2, 2), 4, 6)
    with pytest.raises(ValueError, match="uint8"):
        wrap_table(integral_image(torch.rand(2, 5, 5)))


@pytest.mark.parametrize(("height", "width", "g", "k"), [(100, 100, 12, 4), (300, 300, 12, 5), (37, 53, 5, 5)])
def test_wrapped_tables_give_the_exact_tables_glimpses(height: int, width: int, g: int, k: int) -> None:
    canvases = random_canvases(16, height, width, torch.uint8, seed=height)
    canvases[:4] = 255  # the largest blocks' sums: 255 * 4**(k - 1), just below 2**16 at k = 5
    locations = torch.cat([random_locations(16 - len(CORNERS), seed=width), torch.tensor(CORNERS)])
    integral = integral_image(canvases)
    with cpu_kernels.disabled():
        exact = glimpse_from_integral(integral, locations, g, k)
        assert torch.equal(glimpse_from_integral(wrap_table(integral), locations, g, k), exact)
    torch.testing.assert_close(exact.double(), reference_retina(canvases, locations, g, k), atol=1e-5, rtol=0)
