"""Where a trained agent looks over many digits: a census of its deterministic glimpses and a heatmap of them
(matplotlib), as ``train/visualize.py --heatmap`` draws it.

"On the digit" is measured with the retina's own geometry (:func:`glimpse_env.pixels.finest_boxes`): a glimpse whose
finest scale's box shares a pixel with the bounding box of the digit's ink.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import PowerNorm
from matplotlib.figure import Figure
from matplotlib.gridspec import GridSpec
from matplotlib.patches import Rectangle

import glimpse_env  # noqa: F401  (registers GlimpseMNIST-v0)
from agents.ram import RecurrentAttentionModel
from agents.rollout import run_episodes
from glimpse_env.config import MNIST_SIDE, GlimpseConfig, env_arguments
from glimpse_env.data import DigitSet, load_digits
from glimpse_env.pixels import finest_boxes

HEATMAP_SLOTS = 1000  # episodes played at once for the census


@dataclass(frozen=True)
class GlimpseCensus:
    """Where the agent looked in deterministic episodes on many digits: what the heatmap shows."""

    config: GlimpseConfig
    split: str
    locations: np.ndarray  # N x T x 2, in [-1, 1]
    digit_centres: np.ndarray  # N x 2, canvas pixel (x, y) of the centre of each digit's 28x28 box
    on_digit: np.ndarray  # N x T: the glimpse's finest-scale box overlaps the digit's ink box
    on_digit_by_chance: float  # the same fraction for one uniform random location per digit
    error: float  # the deterministic policy's error on these digits


def ink_boxes(images: torch.Tensor) -> torch.Tensor:
    """The bounding boxes ``(x0, y0, x1, y1)`` (end exclusive, ``B x 4``) of the nonzero pixels of ``B x 28 x 28``
    digits, in the digit's own pixels (a blank digit gets an empty box, which nothing overlaps)."""
    ink = images > 0
    pixels = torch.arange(images.shape[-1], device=images.device)

    def span(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # B x 28 -> first and one past last
        first = torch.where(mask, pixels, images.shape[-1]).min(1).values
        return first, torch.where(mask, pixels, -1).max(1).values + 1

    (x0, x1), (y0, y1) = span(ink.any(1)), span(ink.any(2))
    return torch.stack([x0, y0, x1, y1], dim=1)


def boxes_overlap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Whether boxes ``(x0, y0, x1, y1)`` (end exclusive) of ``a`` and ``b`` share a pixel (broadcasting)."""
    return (a[..., 0] < b[..., 2]) & (b[..., 0] < a[..., 2]) & (a[..., 1] < b[..., 3]) & (b[..., 1] < a[..., 3])




@torch.no_grad()
def glimpse_census(
    model: RecurrentAttentionModel,
    env_kwargs: dict[str, Any],
    num_images: int | None = None,
    seed: int = 0,
    split: str = "test",
    digits: DigitSet | None = None,
    data_dir: str | None = None,
    slots: int = HEATMAP_SLOTS,
) -> GlimpseCensus:
    """The agent's deterministic episodes on images ``0 .. num_images - 1`` of ``split`` (default all), played
    ``slots`` at a time through the vector env (``agents.run_episodes``, which puts a learned first glimpse where
    the agent wants it; ``seed`` seeds the env's first glimpses otherwise)."""
    available = len(digits if digits is not None else load_digits(split, data_dir))  # cached: the env reuses it
    num_images = available if num_images is None else num_images
    if not 1 <= num_images <= available:
        raise ValueError(f"num_images must lie in [1, {available}] (the {split} split), got {num_images}")
    slots = min(slots, num_images)
    env = gym.make_vec("GlimpseMNIST-v0", num_envs=slots, device="cpu", split=split, digits=digits,
                       data_dir=data_dir, **env_arguments(env_kwargs))
    batch, config = env.unwrapped, env.unwrapped.config
    env.reset(seed=seed)
    chance_generator = torch.Generator().manual_seed(seed)

    locations, centres, on_digit, by_chance, wrong = [], [], [], [], 0
    for start in range(0, num_images, slots):
        indices = torch.arange(start, min(start + slots, num_images))
        count = len(indices)
        padded = torch.cat([indices, indices[:1].expand(slots - count)])  # the last batch padded, the padding dropped
        episodes = run_episodes(model, env, {"indices": padded}, deterministic=True)
        where = episodes.locations.transpose(0, 1)[:count].float()  # count x T x 2
        offset = batch.digit_offsets[:count].cpu()  # the (x, y) of each digit's top-left pixel on its canvas
        ink = ink_boxes(batch.digits.images[indices].cpu()) + offset.repeat(1, 2)
        on_digit.append(boxes_overlap(finest_boxes(where, config), ink[:, None]))
        uniform = torch.rand(count, 2, generator=chance_generator) * 2.0 - 1.0
        by_chance.append(boxes_overlap(finest_boxes(uniform, config), ink))
        wrong += int((episodes.logits[:count].argmax(1).cpu() != episodes.labels[:count].cpu()).sum())
        locations.append(where)
        centres.append(offset.float() + MNIST_SIDE / 2)
    env.close()
    return GlimpseCensus(
        config=config,
        split=split,
        locations=torch.cat(locations).numpy(),
        digit_centres=torch.cat(centres).numpy(),
        on_digit=torch.cat(on_digit).numpy(),
        on_digit_by_chance=float(torch.cat(by_chance).float().mean()),
        error=wrong / num_images,
    )




def draw_heatmap(census: GlimpseCensus, title: str = "") -> Figure:
    """Where the agent looks, over all the census's digits, as a matplotlib figure.

    Top: the fraction of glimpses at each step whose finest scale's box overlaps the digit, against the step, and
    the same fraction for a glimpse at a uniform random location (dashed). "Overlaps the digit" means: shares a
    pixel with the bounding box of the digit's nonzero pixels (its ink, not its whole 28x28 square, which has black
    margins). Then one row per glimpse ``t``: (a) the density of the glimpse centres on the canvas (canvas pixels,
    y down, the canvas's edge in white); (b) the density of the glimpse centres relative to the centre of the
    digit's 28x28 square (drawn dashed), which undoes the translation. Colours: the fraction of that step's
    glimpses in each cell, on a power scale (exponent 0.4: faint cells stay visible) shared by all panels of a column.
    """
    config, (count, steps) = census.config, census.locations.shape[:2]
    figure = Figure(figsize=(9.0, 2.5 + 2.9 * (steps + 1)), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(steps + 2, 2, height_ratios=[1.0] * (steps + 1) + [0.06])  # the last row: colour bars
    fraction = 100.0 * census.on_digit.mean(axis=0)
    summary = figure.add_subplot(grid[0, :])
    summary.plot(range(1, steps + 1), fraction, marker="o", label="the agent's glimpses")
    summary.axhline(100.0 * census.on_digit_by_chance, color="grey", linestyle="--",
                    label="a glimpse at a uniform random location")
    summary.set(xlabel="glimpse", ylabel="on the digit (%)", ylim=(0, 102), xticks=range(1, steps + 1),
                title="glimpses whose finest scale overlaps the digit's ink")
    summary.grid(True, alpha=0.3)
    summary.legend(loc="best", fontsize="small")
    for column, (density, extent, caption) in enumerate(glimpse_densities(census)):
        _draw_density_column(figure, grid, column, density, extent, caption, config.size, fraction)

    size = config.size
    headline = (f"{size}x{size}, clutter {config.clutter}, {steps} glimpses of {config.scales} x "
                f"{config.glimpse_size}x{config.glimpse_size}: {count} {census.split} digits, deterministic "
                f"error {100 * census.error:.2f}%")
    figure.suptitle(f"{title}\n{headline}" if title else headline)
    return figure


def glimpse_densities(census: GlimpseCensus) -> list[tuple[np.ndarray, tuple[float, float], str]]:
    """The heatmap's two columns: (``T x bins x bins`` densities, their (low, high) extent, caption) of the glimpse
    centres on the canvas and relative to the digit's centre; each step's cells sum to one."""
    locations, size = census.locations, census.config.size
    count, steps = locations.shape[:2]
    # The glimpse centres in canvas pixels, unrounded: retina.location_to_pixel rounds these to the pixel corner
    # the retina centres on, which would pile the densities onto bin edges.
    pixels = (locations + 1.0) / 2.0 * size
    relative = pixels - census.digit_centres[:, None, :]
    reach = size - MNIST_SIDE / 2  # the farthest a glimpse centre can be from the digit's centre
    canvas_bins = size if size <= 30 else size // 2
    relative_bins = int(2 * reach) if reach <= 15 else int(reach)

    def histograms(points: np.ndarray, low: float, high: float, bins: int) -> np.ndarray:  # T x bins x bins
        return np.stack([
            np.histogram2d(points[:, t, 1], points[:, t, 0], bins=bins, range=[[low, high], [low, high]])[0] / count
            for t in range(steps)
        ])  # rows are y: the images are drawn as pictures, y down

    return [
        (histograms(pixels, 0.0, size, canvas_bins), (0.0, size), "on the canvas (pixels)"),
        (histograms(relative, -reach, reach, relative_bins), (-reach, reach), "relative to the digit's centre"),
    ]


def _draw_density_column(
    figure: Figure, grid: GridSpec, column: int, density: np.ndarray, extent: tuple[float, float], caption: str,
    size: int, fraction: np.ndarray,
) -> None:
    """One column of density panels, a row per glimpse, and its colour bar in the grid's last row."""
    low, high = extent
    steps = len(density)
    norm = PowerNorm(0.4, vmin=0.0, vmax=float(density.max()) or 1.0)
    for t in range(steps):
        axes = figure.add_subplot(grid[t + 1, column])
        image = axes.imshow(density[t], extent=(low, high, high, low), cmap="magma", norm=norm, interpolation="nearest")
        if column == 0:
            axes.add_patch(Rectangle((0, 0), size, size, fill=False, edgecolor="white", linewidth=0.8))
            axes.set_ylabel(f"glimpse {t + 1}\n{fraction[t]:.0f}% on the digit")
        else:
            half = MNIST_SIDE / 2
            axes.add_patch(Rectangle((-half, -half), MNIST_SIDE, MNIST_SIDE, fill=False, edgecolor="white",
                                     linestyle="--", linewidth=0.8))
        if t == 0:
            axes.set_title(caption)
    top = norm.vmax
    figure.colorbar(image, cax=figure.add_subplot(grid[steps + 1, column]), orientation="horizontal",
                    ticks=[0.0, top / 16, top / 4, top], format="{x:.2%}", label="the step's glimpses in the cell")


def write_heatmap(
    model: RecurrentAttentionModel, env_kwargs: dict[str, Any], out: str | os.PathLike, name: str,
    num_images: int | None = None, seed: int = 0, split: str = "test", digits: DigitSet | None = None,
    data_dir: str | None = None,
) -> Path:
    """The heatmap of :func:`glimpse_census` over the first ``num_images`` digits of ``split`` (default all) as
    ``NAME-heatmap.png`` in the folder ``out`` (made as needed); returns its path."""
    census = glimpse_census(model, env_kwargs, num_images, seed, split, digits, data_dir)
    figure = draw_heatmap(census, title=f"where {name} looks")
    path = Path(out) / f"{name}-heatmap.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
