"""The compiled CPU kernels (glimpse_env.cpu_kernels) against the torch path that defines them: bit for bit.

Tables: the kernel's, float32 or wrapped (int16), equal the torch path's (``compose`` + ``integral_image``, wrapped
by ``wrap_table``) over random and evaluation layouts. Glimpses: every glimpse the kernel reads equals the torch
path's, from every kind of table (float32, float64, wrapped; composed canvases, translated digits through
``rows``/``origin``, canvases shared by ``repeat_interleave``), at random locations and at and beyond the borders.
And whole episodes of the env are the same with the kernels and without. CUDA (the torch path) is compared too,
where a GPU is present.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from glimpse_env import cpu_kernels
from glimpse_env.canvas import (
    CANVAS_CHUNK,
    DISTRACTOR_SIDE,
    Layout,
    canvas_integrals,
    compose,
    digit_integrals,
    evaluation_layouts,
    random_layout,
)
from glimpse_env.data import DigitSet
from glimpse_env.retina import IntegralImage, glimpse_from_integral, integral_image, wrap_table
from glimpse_env.vector_env import GlimpseMNISTVectorEnv

pytestmark = pytest.mark.skipif(not cpu_kernels.available(), reason="numba is not installed (or kernels are off)")
CPU = torch.device("cpu")
BORDERS = [(-1.0, -1.0), (1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (0.0, 1.0), (-1.0, 0.0), (0.999, -0.999)]
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
ONE_CASE = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def torch_tables(digits: DigitSet, indices: torch.Tensor, layout: Layout, size: int) -> IntegralImage:
    with cpu_kernels.disabled():
        return canvas_integrals(digits, indices, layout, size)


def torch_glimpses(integral: IntegralImage, locations: torch.Tensor, g: int, k: int) -> torch.Tensor:
    with cpu_kernels.disabled():
        return glimpse_from_integral(integral, locations, g, k)


def locations_with_borders(batch: int, generator: torch.Generator) -> torch.Tensor:
    """Random locations, the first ones on the corners and edges of the canvas."""
    locations = torch.rand(batch, 2, generator=generator) * 2 - 1
    border = torch.tensor(BORDERS)[:batch]
    locations[: len(border)] = border
    return locations


def assert_same_glimpses(integral: IntegralImage, locations: torch.Tensor, g: int, k: int) -> None:
    fast = glimpse_from_integral(integral, locations, g, k)
    assert fast.dtype == torch.float32 and torch.equal(fast, torch_glimpses(integral, locations, g, k))


# --- tables
@ONE_CASE
@given(
    seed=st.integers(0, 2**31),
    size=st.sampled_from([60, 100, 28 + DISTRACTOR_SIDE, 37]),
    clutter=st.sampled_from([1, 4, 8]),
    batch=st.sampled_from([1, 3, CANVAS_CHUNK - 1, CANVAS_CHUNK + 1, 2 * CANVAS_CHUNK + 17]),
)
def test_kernel_tables_equal_the_torch_tables(
    tiny_digits: DigitSet, seed: int, size: int, clutter: int, batch: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randint(0, len(tiny_digits), (batch,), generator=generator)
    layout = random_layout(batch, size, clutter, len(tiny_digits), generator, CPU)
    expected = torch_tables(tiny_digits, indices, layout, size)
    exact = canvas_integrals(tiny_digits, indices, layout, size)
    assert exact.table.dtype == expected.table.dtype == torch.float32
    assert torch.equal(exact.table, expected.table) and exact.value_scale == expected.value_scale
    for scales in (1, 3, 4, 5):
        wrapped = canvas_integrals(tiny_digits, indices, layout, size, scales=scales)
        assert wrapped.table.dtype == torch.int16 and torch.equal(wrapped.table, wrap_table(expected).table)
    assert canvas_integrals(tiny_digits, indices, layout, size, scales=6).table.dtype == torch.float32


def test_overlaps_clip_to_255_in_the_kernel_too() -> None:
    # Digits that are uniform squares: the digit (100) and three distractors (90) piled up exceed 255.
    images = torch.tensor([100, 90], dtype=torch.uint8)[:, None, None].expand(-1, 28, 28).contiguous()
    digits = DigitSet(images, torch.tensor([0, 1]))
    layout = Layout(
        torch.tensor([[0, 0]]), torch.tensor([[1, 1, 1]]), torch.zeros(1, 3, 2, dtype=torch.long),
        torch.tensor([[[10, 10], [14, 10], [14, 10]]]),
    )
    expected = torch_tables(digits, torch.tensor([0]), layout, 40)
    assert torch.equal(canvas_integrals(digits, torch.tensor([0]), layout, 40).table, expected.table)
    canvas = compose(digits, torch.tensor([0]), layout, 40)[0].long()
    assert int(canvas.max()) == 255 and float(expected.table[0, -1, -1]) == int(canvas.sum())  # 100 + 3 * 90 > 255


@pytest.mark.parametrize(("size", "clutter"), [(60, 4), (100, 8)])
def test_evaluation_layouts_give_the_same_tables(tiny_digits: DigitSet, size: int, clutter: int) -> None:
    layouts = evaluation_layouts(len(tiny_digits), size, clutter, CPU)
    indices = torch.arange(len(tiny_digits)).flip(0)
    expected = torch_tables(tiny_digits, indices, layouts[indices], size)
    assert torch.equal(canvas_integrals(tiny_digits, indices, layouts[indices], size).table, expected.table)


def test_the_kernel_writes_over_a_table_only_when_it_fits(tiny_digits: DigitSet) -> None:
    generator = torch.Generator().manual_seed(0)
    indices = torch.randint(0, len(tiny_digits), (33,), generator=generator)
    layout = random_layout(33, 60, 4, len(tiny_digits), generator, CPU)
    expected = wrap_table(torch_tables(tiny_digits, indices, layout, 60)).table
    old = torch.ones(33, 61, 61, dtype=torch.int16)
    reused = canvas_integrals(tiny_digits, indices, layout, 60, reuse=old, scales=3)
    assert reused.table.data_ptr() == old.data_ptr() and torch.equal(old, expected)
    for misfit in (torch.ones(33, 61, 61), torch.ones(32, 61, 61, dtype=torch.int16)):
        fresh = canvas_integrals(tiny_digits, indices, layout, 60, reuse=misfit, scales=3)
        assert fresh.table.data_ptr() != misfit.data_ptr() and bool((misfit == 1).all())
        assert torch.equal(fresh.table, expected)


def test_layouts_the_kernel_cannot_take_go_the_torch_way(tiny_digits: DigitSet) -> None:
    generator = torch.Generator().manual_seed(1)
    indices = torch.randint(0, len(tiny_digits), (5,), generator=generator)
    layout = random_layout(5, 60, 2, len(tiny_digits), generator, CPU)
    off_canvas = Layout(layout.digit_offset, layout.distractor_source, layout.distractor_crop,
                        layout.distractor_offset + 60)
    with pytest.raises(RuntimeError):  # the torch path's own error, not a write past the table
        canvas_integrals(tiny_digits, indices, off_canvas, 60)
    with pytest.raises(IndexError):
        canvas_integrals(tiny_digits, indices + len(tiny_digits), layout, 60)


# --- glimpses
@ONE_CASE
@given(
    seed=st.integers(0, 2**31),
    shape=st.sampled_from([(28, 28, 8, 1), (60, 60, 12, 3), (100, 100, 12, 4), (37, 53, 5, 5), (40, 40, 3, 2)]),
    dtype=st.sampled_from([torch.uint8, torch.float32, torch.float64]),
    wrapped=st.booleans(),
    batch=st.sampled_from([1, 7, 64]),
)
def test_kernel_glimpses_equal_the_torch_glimpses(
    seed: int, shape: tuple[int, int, int, int], dtype: torch.dtype, wrapped: bool, batch: int
) -> None:
    height, width, g, k = shape
    generator = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        canvases = torch.randint(0, 256, (batch, height, width), generator=generator, dtype=torch.uint8)
    else:
        canvases = torch.rand(batch, height, width, generator=generator, dtype=torch.float64).to(dtype)
    integral = integral_image(canvases)
    if wrapped and dtype == torch.uint8:
        integral = wrap_table(integral)
    locations = locations_with_borders(batch, generator)
    assert_same_glimpses(integral, locations, g, k)


def test_translated_digits_through_rows_and_origin(tiny_digits: DigitSet) -> None:
    generator = torch.Generator().manual_seed(3)
    for size, g, k in [(28, 8, 1), (60, 12, 3), (100, 12, 4)]:
        indices = torch.randint(0, len(tiny_digits), (77,), generator=generator)
        layout = random_layout(77, size, 0, len(tiny_digits), generator, CPU)
        integral = canvas_integrals(tiny_digits, indices, layout, size)
        assert integral.rows is not None and integral.table is digit_integrals(tiny_digits).table
        assert_same_glimpses(integral, locations_with_borders(77, generator), g, k)
        assert_same_glimpses(integral.repeat_interleave(3), locations_with_borders(231, generator), g, k)


@pytest.mark.parametrize("scales", [None, 4])
def test_shared_canvases_through_repeat_interleave(tiny_digits: DigitSet, scales: int | None) -> None:
    generator = torch.Generator().manual_seed(4)
    indices = torch.randint(0, len(tiny_digits), (13,), generator=generator)
    layout = random_layout(13, 100, 8, len(tiny_digits), generator, CPU)
    integral = canvas_integrals(tiny_digits, indices, layout, 100, scales=scales).repeat_interleave(10)
    locations = locations_with_borders(130, generator)
    assert_same_glimpses(integral, locations, 12, 4)
    exact = torch_tables(tiny_digits, indices, layout, 100).repeat_interleave(10)
    assert torch.equal(glimpse_from_integral(integral, locations, 12, 4), torch_glimpses(exact, locations, 12, 4))


def test_rows_out_of_range_raise_as_the_torch_path_does() -> None:
    integral = integral_image(torch.zeros(3, 10, 10, dtype=torch.uint8)).select(
        torch.tensor([0, 3]), torch.zeros(2, 2, dtype=torch.long), 20, 20
    )
    with pytest.raises(IndexError):
        glimpse_from_integral(integral, torch.zeros(2, 2), 4, 1)


# --- whole episodes
@pytest.mark.parametrize(
    ("kwargs", "group"),
    [
        (dict(size=60, scales=3, glimpse_size=12, n_glimpses=8, clutter=4), 1),
        (dict(size=100, scales=4, glimpse_size=12, n_glimpses=8, clutter=8), 1),
        (dict(size=100, scales=4, glimpse_size=12, n_glimpses=8, clutter=8), 5),
        (dict(size=60, scales=3, glimpse_size=12, n_glimpses=4, split="test"), 1),
        (dict(size=100, scales=4, glimpse_size=12, n_glimpses=4, clutter=8, split="validation"), 1),
        (dict(size=28, scales=1, glimpse_size=8, n_glimpses=6), 1),
    ],
)
def test_episodes_are_the_same_with_and_without_the_kernels(tiny_digits: DigitSet, kwargs: dict, group: int) -> None:
    def episodes() -> list[torch.Tensor]:
        env = GlimpseMNISTVectorEnv(num_envs=45, digits=tiny_digits, **kwargs)
        generator = torch.Generator().manual_seed(6)
        seen = []
        for episode in range(3):
            observation, _ = env.reset(seed=episode, options={"slots_per_canvas": group})
            seen.append(observation["glimpse"])
            for _ in range(kwargs["n_glimpses"]):
                location = torch.rand(45, 2, generator=generator) * 2.4 - 1.2  # some beyond the canvas
                observation, *_ = env.step({"location": location, "prediction": torch.zeros(45, 10)})
                seen.append(observation["glimpse"])
        return seen

    fast = episodes()
    with cpu_kernels.disabled():
        slow = episodes()
    assert all(torch.equal(a, b) for a, b in zip(fast, slow, strict=True))


# --- CUDA: the torch path there gives what the kernels give on the CPU
@CUDA
@pytest.mark.parametrize(("size", "clutter", "k"), [(60, 4, 3), (100, 8, 4)])
def test_cuda_tables_and_glimpses_equal_the_cpu_kernels(tiny_digits: DigitSet, size: int, clutter: int, k: int):
    cuda = torch.device("cuda")
    generator = torch.Generator().manual_seed(size)
    indices = torch.randint(0, len(tiny_digits), (257,), generator=generator)
    layout = random_layout(257, size, clutter, len(tiny_digits), generator, CPU)
    locations = locations_with_borders(257, generator)
    cpu = canvas_integrals(tiny_digits, indices, layout, size, scales=k)
    gpu_layout = Layout(*(field.to(cuda) for field in vars(layout).values()))
    on_gpu = canvas_integrals(tiny_digits.to(cuda), indices.to(cuda), gpu_layout, size, scales=k)
    assert on_gpu.table.is_cuda and torch.equal(wrap_table(on_gpu).table.cpu(), cpu.table)
    gpu_glimpses = glimpse_from_integral(on_gpu, locations.to(cuda), 12, k).cpu()
    assert torch.equal(gpu_glimpses, glimpse_from_integral(cpu, locations, 12, k))
    assert torch.equal(glimpse_from_integral(wrap_table(on_gpu), locations.to(cuda), 12, k).cpu(), gpu_glimpses)


@CUDA
def test_cuda_episodes_equal_the_cpu_kernels(tiny_digits: DigitSet) -> None:
    # Evaluation layouts are drawn on the CPU, so the same on both devices: the same canvases, the same glimpses.
    kwargs = dict(num_envs=40, size=100, scales=4, glimpse_size=12, n_glimpses=3, clutter=8, split="test")
    generator = torch.Generator().manual_seed(7)
    indices = torch.randint(0, len(tiny_digits), (40,), generator=generator)
    paths = [locations_with_borders(40, generator) * 1.1 for _ in range(4)]
    seen = []
    for device in ("cpu", "cuda"):
        env = GlimpseMNISTVectorEnv(device=device, digits=tiny_digits, **kwargs)
        observation, _ = env.reset(options={"indices": indices, "location": paths[0]})
        glimpses = [observation["glimpse"].cpu()]
        for location in paths[1:]:
            observation, *_ = env.step({"location": location, "prediction": torch.zeros(40, 10)})
            glimpses.append(observation["glimpse"].cpu())
        seen.append(torch.stack(glimpses))
    assert torch.equal(seen[0], seen[1])
