"""Canvases: translation, clutter, clipping, split-pure distractors, fixed evaluation layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from glimpse_env.canvas import (
    CANVAS_CHUNK,
    DISTRACTOR_SIDE,
    Layout,
    canvas_integrals,
    compose,
    evaluation_layouts,
    random_layout,
)
from glimpse_env.data import DigitSet, load_digits
from glimpse_env.env import GlimpseMNISTEnv
from glimpse_env.retina import glimpse_from_integral, integral_image, retina
from glimpse_env.vector_env import GlimpseMNISTVectorEnv

CPU = torch.device("cpu")


def hand_layout(digit_offset: list, sources: list, crops: list, offsets: list) -> Layout:
    """A layout written out by hand (one row per canvas)."""
    batch = len(digit_offset)
    return Layout(
        torch.tensor(digit_offset, dtype=torch.long),
        torch.tensor(sources, dtype=torch.long).reshape(batch, -1),
        torch.tensor(crops, dtype=torch.long).reshape(batch, -1, 2),
        torch.tensor(offsets, dtype=torch.long).reshape(batch, -1, 2),
    )


def constant_digits(values: list[int]) -> DigitSet:
    """Digits that are uniform squares of the given pixel values."""
    images = torch.tensor(values, dtype=torch.uint8)[:, None, None].expand(-1, 28, 28).contiguous()
    return DigitSet(images, torch.arange(len(values)) % 10)


# --- translation
@pytest.mark.parametrize("size", [29, 60, 100])
def test_translated_digit_is_always_fully_inside_and_positions_cover_the_range(
    tiny_digits: DigitSet, size: int
) -> None:
    generator = torch.Generator().manual_seed(size)
    indices = torch.arange(len(tiny_digits)).repeat(4)  # 1200 canvases
    layout = random_layout(len(indices), size, 0, len(tiny_digits), generator, CPU)
    offsets = layout.digit_offset
    assert int(offsets.min()) == 0 and int(offsets.max()) == size - 28  # both extremes are reached
    assert len(torch.unique(offsets[:, 0])) == size - 27  # every position, in x
    assert len(torch.unique(offsets[:, 1])) == size - 27  # and in y
    counts = torch.bincount(offsets[:, 0], minlength=size - 27).double()
    assert counts.std() / counts.mean() < 0.5  # roughly uniform

    canvases = compose(tiny_digits, indices, layout, size)
    assert canvases.shape == (len(indices), size, size) and canvases.dtype == torch.uint8
    digit_sums = tiny_digits.images[indices].long().sum(dim=(1, 2))
    assert torch.equal(canvases.long().sum(dim=(1, 2)), digit_sums)  # nothing was cut off
    for b in range(0, len(indices), 97):
        x, y = offsets[b].tolist()
        assert torch.equal(canvases[b, y : y + 28, x : x + 28], tiny_digits.images[indices[b]])


def test_env_canvases_keep_the_whole_digit(tiny_digits: DigitSet) -> None:
    env = GlimpseMNISTVectorEnv(num_envs=300, size=60, scales=3, glimpse_size=12, digits=tiny_digits)
    env.reset(seed=0, options={"indices": torch.arange(300)})
    canvases = env.canvases
    assert torch.equal(canvases.long().sum(dim=(1, 2)), tiny_digits.images.long().sum(dim=(1, 2)))
    # The digit lands at many different places.
    first_rows = (canvases.sum(dim=2) > 0).int().argmax(dim=1)
    assert len(torch.unique(first_rows)) > 10


def test_size_28_is_exactly_the_digit(tiny_digits: DigitSet) -> None:
    env = GlimpseMNISTVectorEnv(num_envs=300, size=28, digits=tiny_digits)
    env.reset(seed=1, options={"indices": torch.arange(300).flip(0)})
    assert torch.equal(env.canvases, tiny_digits.images.flip(0))
    single = GlimpseMNISTEnv(size=28, digits=tiny_digits)
    single.reset(seed=2, options={"index": 17})
    assert (single.canvas == tiny_digits.images[17].numpy()).all()


# --- clutter
@pytest.mark.parametrize("clutter", [0, 1, 4, 8])
def test_each_distractor_adds_one_8x8_patch(clutter: int) -> None:
    digits = constant_digits([1, 2, 3])
    size = 100
    # The digit (all 1) in the top-left corner; distractor j, a crop of digit 2 (all 3), at column 30 + 9 j.
    layout = hand_layout(
        [[0, 0]],
        [[2] * clutter],
        [[[j, 20 - j] for j in range(clutter)]],
        [[[30 + 9 * j, 40] for j in range(clutter)]],
    )
    canvas = compose(digits, torch.tensor([0]), layout, size)[0].long()
    assert int(canvas.sum()) == 28 * 28 * 1 + clutter * DISTRACTOR_SIDE**2 * 3
    assert int((canvas == 3).sum()) == clutter * DISTRACTOR_SIDE**2
    for j in range(clutter):
        x = 30 + 9 * j
        assert torch.all(canvas[40:48, x : x + 8] == 3)


def test_distractor_is_the_given_crop_of_its_source() -> None:
    images = torch.arange(28 * 28, dtype=torch.int64).reshape(1, 28, 28) % 251
    blank = torch.zeros(1, 28, 28, dtype=torch.uint8)
    digits = DigitSet(torch.cat([blank, images.to(torch.uint8)]), torch.arange(2))
    layout = hand_layout([[0, 0]], [[1]], [[[5, 11]]], [[[40, 30]]])  # crop at x=5, y=11 pasted at x=40, y=30
    canvas = compose(digits, torch.tensor([0]), layout, 60)[0]
    assert torch.equal(canvas[30:38, 40:48], digits.images[1, 11:19, 5:13])
    assert int(canvas.long().sum()) == int(digits.images[1, 11:19, 5:13].long().sum())


def test_overlaps_are_summed_and_clipped_to_255() -> None:
    digits = constant_digits([100, 90])  # the digit is all 100, its distractors crops of an all-90 digit
    offsets = [[[10, 10], [14, 10], [30, 30]]]
    layout = hand_layout([[0, 0]], [[1, 1, 1]], [[[0, 0], [0, 0], [0, 0]]], offsets)
    canvas = compose(digits, torch.tensor([0]), layout, 40)[0].long()
    assert torch.all(canvas[10:18, 14:18] == 255)  # 100 + 90 + 90 = 280, clipped
    assert torch.all(canvas[10:18, 10:14] == 190) and torch.all(canvas[10:18, 18:22] == 190)  # summed
    assert torch.all(canvas[0:10, 0:28] == 100)  # the digit alone
    assert torch.all(canvas[30:38, 30:38] == 90)  # a distractor alone
    assert int(canvas.sum()) == 100 * (28 * 28 - 8 * 12) + 190 * 8 * 8 + 255 * 8 * 4 + 90 * 64


def test_random_clutter_layouts_stay_on_the_canvas(tiny_digits: DigitSet) -> None:
    generator = torch.Generator().manual_seed(0)
    layout = random_layout(500, 60, 4, len(tiny_digits), generator, CPU)
    assert layout.distractor_source.shape == (500, 4)
    assert int(layout.distractor_source.min()) >= 0 and int(layout.distractor_source.max()) < len(tiny_digits)
    assert int(layout.distractor_crop.min()) == 0 and int(layout.distractor_crop.max()) == 28 - 8
    assert int(layout.distractor_offset.min()) == 0 and int(layout.distractor_offset.max()) == 60 - 8


@pytest.mark.parametrize("clutter", [0, 3])
def test_canvas_integrals_read_the_composed_canvas(tiny_digits: DigitSet, clutter: int) -> None:
    generator = torch.Generator().manual_seed(clutter)
    indices = torch.randint(0, len(tiny_digits), (64,), generator=generator)
    layout = random_layout(64, 60, clutter, len(tiny_digits), generator, CPU)
    locations = torch.rand(64, 2, generator=generator) * 2 - 1
    from_tables = glimpse_from_integral(canvas_integrals(tiny_digits, indices, layout, 60), locations, 12, 3)
    expected = retina(compose(tiny_digits, indices, layout, 60), locations, 12, 3)
    torch.testing.assert_close(from_tables, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("batch", [CANVAS_CHUNK - 1, CANVAS_CHUNK, CANVAS_CHUNK + 1, 3 * CANVAS_CHUNK + 17])
def test_canvases_summed_in_chunks_equal_the_whole_batch_summed_at_once(tiny_digits: DigitSet, batch: int) -> None:
    generator = torch.Generator().manual_seed(batch)
    indices = torch.randint(0, len(tiny_digits), (batch,), generator=generator)
    layout = random_layout(batch, 100, 8, len(tiny_digits), generator, CPU)
    chunked = canvas_integrals(tiny_digits, indices, layout, 100)
    whole = integral_image(compose(tiny_digits, indices, layout, 100))
    assert chunked.table.shape == whole.table.shape and chunked.table.dtype == whole.table.dtype
    assert torch.equal(chunked.table, whole.table) and chunked.value_scale == whole.value_scale


def test_a_table_no_longer_needed_is_written_over_only_when_it_fits(tiny_digits: DigitSet) -> None:
    generator = torch.Generator().manual_seed(0)
    batch = 2 * CANVAS_CHUNK + 3
    indices = torch.randint(0, len(tiny_digits), (batch,), generator=generator)
    layout = random_layout(batch, 100, 8, len(tiny_digits), generator, CPU)
    old = canvas_integrals(tiny_digits, indices.flip(0), layout[torch.arange(batch).flip(0)], 100).table
    reused = canvas_integrals(tiny_digits, indices, layout, 100, reuse=old)
    assert reused.table.data_ptr() == old.data_ptr()  # written over, not allocated
    assert torch.equal(reused.table, integral_image(compose(tiny_digits, indices, layout, 100)).table)
    for misfit in (torch.zeros(batch - 1, 101, 101), torch.zeros(batch, 101, 101, dtype=torch.float64)):
        fresh = canvas_integrals(tiny_digits, indices, layout, 100, reuse=misfit)
        assert fresh.table.data_ptr() != misfit.data_ptr() and not misfit.any()
        assert torch.equal(fresh.table, reused.table)


# --- splits
def test_distractors_come_from_the_env_digits() -> None:
    # Digit 0 is blank: every lit pixel of its canvas is a distractor, and must come from this set (value 77).
    digits = constant_digits([0, 77, 77, 77])
    env = GlimpseMNISTVectorEnv(num_envs=8, size=60, clutter=4, split="test", digits=digits)
    env.reset(options={"indices": torch.zeros(8, dtype=torch.long)})
    values = torch.unique(env.canvases)
    assert set(values.tolist()) <= {0, 77, 154, 231, 255}
    assert int((env.canvases > 0).sum()) > 0


@pytest.mark.parametrize("split", ["validation", "test"])
def test_evaluation_distractors_come_from_the_same_split(mnist_dir: Path, split: str) -> None:
    env = GlimpseMNISTVectorEnv(num_envs=16, size=60, clutter=4, split=split, data_dir=mnist_dir)
    expected_digits = load_digits(split, data_dir=mnist_dir)
    assert env.digits is expected_digits  # the split's own digits, shared
    layouts = evaluation_layouts(len(expected_digits), 60, 4, CPU)
    assert len(expected_digits) == {"validation": 5000, "test": 10000}[split]
    assert int(layouts.distractor_source.max()) < len(expected_digits)
    indices = torch.tensor([0, 1, 2, 3, 4999, 4998, 7, 7, 100, 200, 300, 400, 500, 600, 700, 800])
    env.reset(seed=0, options={"indices": indices})
    assert torch.equal(env.canvases, compose(expected_digits, indices, layouts[indices], 60))


# --- fixed layouts
@pytest.mark.parametrize(("size", "clutter"), [(60, 0), (60, 4), (100, 8)])
def test_evaluation_canvases_depend_only_on_the_index(tiny_digits: DigitSet, size: int, clutter: int) -> None:
    first = GlimpseMNISTVectorEnv(num_envs=4, size=size, clutter=clutter, split="test", digits=tiny_digits)
    first.reset(seed=0, options={"indices": torch.tensor([5, 7, 7, 9])})
    canvases = first.canvases.clone()
    assert torch.equal(canvases[1], canvases[2])  # a repeated index is the same canvas

    second = GlimpseMNISTVectorEnv(num_envs=4, size=size, clutter=clutter, split="test", digits=tiny_digits)
    second.reset(seed=12345)  # other episodes first
    second.reset()
    second.reset(options={"indices": torch.tensor([9, 5, 7, 0])})
    assert torch.equal(second.canvases[0], canvases[3])
    assert torch.equal(second.canvases[1], canvases[0])
    assert torch.equal(second.canvases[2], canvases[1])

    single = GlimpseMNISTEnv(size=size, clutter=clutter, split="test", digits=tiny_digits)
    for seed in (1, 2):
        single.reset(seed=seed, options={"index": 9})
        assert (single.canvas == canvases[3].numpy()).all()


def test_random_indices_on_the_test_split_give_the_fixed_canvases(tiny_digits: DigitSet) -> None:
    env = GlimpseMNISTVectorEnv(num_envs=32, size=60, clutter=4, split="test", digits=tiny_digits)
    env.reset(seed=3)
    layouts = evaluation_layouts(len(tiny_digits), 60, 4, CPU)
    assert torch.equal(env.canvases, compose(tiny_digits, env.indices, layouts[env.indices], 60))


@pytest.mark.parametrize("clutter", [0, 4])
def test_training_canvases_differ_between_episodes(tiny_digits: DigitSet, clutter: int) -> None:
    env = GlimpseMNISTVectorEnv(num_envs=8, size=60, clutter=clutter, split="train", digits=tiny_digits)
    same = {"indices": torch.full((8,), 3)}
    env.reset(seed=0, options=same)
    first = env.canvases.clone()
    assert not all(torch.equal(first[0], first[b]) for b in range(1, 8))  # one digit, different canvases
    env.reset(options=same)
    assert not torch.equal(env.canvases, first)
    # ... and reseeding replays them.
    env.reset(seed=0, options=same)
    assert torch.equal(env.canvases, first)
