"""One training step and what it runs under: the episode loss as one module (for DDP), the backward pass with its
clipping, the learning-rate and location-noise schedules and the order of an epoch's images."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from agents import HybridLoss, RecurrentAttentionModel, hybrid_loss, run_episodes
from agents.rollout import Episodes
from agents.training.config import TrainConfig
from agents.training.distributed import Distributed


def location_std(config: TrainConfig, epoch: int) -> float:
    """The location policy's standard deviation in ``epoch`` (1-based): constant, or annealed linearly from
    ``loc_std`` in the first epoch to ``loc_std_final`` in the last."""
    if not config.loc_std_final:
        return config.loc_std
    progress = (epoch - 1) / max(1, config.epochs - 1)
    return config.loc_std + (config.loc_std_final - config.loc_std) * progress


def learning_rate_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of config.lr at optimizer step ``step``: linear warm-up, then cosine decay (or constant).

    Written out rather than torch's SequentialLR(LinearLR, CosineAnnealingLR): that one computes the cosine
    recursively, step from step, and so neither matches these values bit for bit nor reads the saved state of a run
    begun with them."""
    warmup = max(1, round(config.warmup_epochs * steps_per_epoch))
    if step < warmup:
        return (step + 1) / warmup
    if config.lr_schedule == "constant":
        return 1.0
    total = config.epochs * steps_per_epoch
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    final = config.lr_final / config.lr
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rate_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                            steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(config, step,
                                                                                         steps_per_epoch))


def epoch_order(num_train: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """The epoch's training images in a random order, ``length`` of them: every one once, then again from the start
    of the order as often as needed to fill the last batch (a subset smaller than a batch is repeated)."""
    order = torch.randperm(num_train, generator=generator)
    return order.repeat(math.ceil(length / num_train))[:length]


class EpisodeLoss(nn.Module):
    """Play a batch of episodes with ``model`` in ``env`` and return their hybrid loss (and the episodes).

    The RAM runs one forward per glimpse; DistributedDataParallel expects one forward per backward. Wrapped in DDP,
    this module is that one forward, and every parameter the episodes use, the learned first glimpse's too, is
    inside it, so each gets its gradient averaged."""

    def __init__(self, model: RecurrentAttentionModel, env: Any, rl_weight: float) -> None:
        super().__init__()
        self.model, self.env, self.rl_weight = model, env, rl_weight

    def forward(self, options: dict[str, Any]) -> tuple[HybridLoss, Episodes]:
        episodes = run_episodes(self.model, self.env, options)
        return hybrid_loss(episodes, self.rl_weight), episodes


def wrap_for_ddp(step: EpisodeLoss, config: TrainConfig, dist: Distributed, device: torch.device) -> nn.Module:
    """``step`` as the training loop calls it: itself for one process and under --clip-separately (which averages
    its two gradients itself, see backward_and_clip), else in DDP."""
    if not dist.active or config.clip_separately:
        return step
    # With one glimpse the location and baseline heads get no gradient at all: only then must DDP look for unused
    # parameters (a graph traversal every step).
    return DistributedDataParallel(step, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=config.n_glimpses == 1)


def backward_and_clip(loss: HybridLoss, params: list[nn.Parameter], config: TrainConfig,
                      dist: Distributed) -> torch.Tensor:
    """Fill the parameters' gradients (averaged over ranks), clipped to --grad-clip; return the norm before
    clipping (NaN or inf if the gradient is not finite)."""
    clip = config.grad_clip or math.inf  # inf: measure the norm without clipping
    if not config.clip_separately:
        loss.total.backward()  # under DDP, averaged over the ranks as it runs
        return torch.nn.utils.clip_grad_norm_(params, clip)
    # REINFORCE's gradient kept apart, then the supervised one into .grad; each clipped, then added.
    reinforce = config.rl_weight * loss.reinforce
    if reinforce.requires_grad:
        rl_grads = torch.autograd.grad(reinforce, params, retain_graph=True, allow_unused=True)
    else:  # one glimpse and the env's first location: no location was chosen
        rl_grads = [None] * len(params)
    (loss.cross_entropy + loss.baseline).backward()
    parts = []
    for grads in ([p.grad for p in params], list(rl_grads)):
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
        if dist.active:  # no DDP in this mode: average each part over the ranks here, one flat all-reduce each
            flat = dist.sum(torch.cat([g.reshape(-1) for g in grads])) / dist.world_size
            grads = list(flat.split([g.numel() for g in grads]))
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        scale = (clip / (norm + 1e-6)).clamp(max=1.0)  # as clip_grad_norm_ does
        parts.append(([g * scale for g in grads], norm))
    (supervised, supervised_norm), (rl, rl_norm) = parts
    for p, a, b in zip(params, supervised, rl, strict=True):
        p.grad = (a + b).view_as(p)
    return torch.linalg.vector_norm(torch.stack([supervised_norm, rl_norm]))
