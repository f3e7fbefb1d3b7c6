"""The hybrid loss of the RAM: supervised cross-entropy + baseline regression + weighted REINFORCE."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from agents.rollout import Episodes


class HybridLoss(NamedTuple):
    total: torch.Tensor
    cross_entropy: torch.Tensor
    baseline: torch.Tensor
    reinforce: torch.Tensor


def hybrid_loss(episodes: Episodes, rl_weight: float = 1.0) -> HybridLoss:
    """``CE(final logits, label) + MSE(b_t, R) + rl_weight * REINFORCE``, averaged over the batch.

    REINFORCE is ``-sum_t log pi(l_t) * (R - b_t)`` with the advantage detached, so it moves the location head
    (and, with the model's ``reinforce_core``, the core and glimpse network); the baseline regresses on ``R`` alone.
    The model detaches what feeds the baseline (and, by default, the location head), so cross-entropy cannot reach
    them.
    """
    cross_entropy = F.cross_entropy(episodes.logits.float(), episodes.labels)
    if episodes.log_probs.numel() == 0:  # one glimpse: the agent never chose a location
        zero = cross_entropy.new_zeros(())
        return HybridLoss(cross_entropy, cross_entropy, zero, zero)
    baselines = episodes.baselines.float()
    returns = episodes.reward[None].expand_as(baselines)
    baseline = F.mse_loss(baselines, returns)
    advantage = (returns - baselines).detach()
    reinforce = -(episodes.log_probs.float() * advantage).sum(0).mean()
    total = cross_entropy + baseline + rl_weight * reinforce
    return HybridLoss(total, cross_entropy, baseline, reinforce)
