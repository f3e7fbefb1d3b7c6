"""Driving a batched GlimpseMNIST env with the RAM, for training (sampled paths) and evaluation."""

from __future__ import annotations

import itertools
from typing import Any, NamedTuple

import torch

from agents.ram import RecurrentAttentionModel

LOCATION_CHOICES = ("policy", "random", "center")


class Episodes(NamedTuple):
    """What a batch of episodes leaves for the hybrid loss.

    ``log_probs`` and ``baselines`` have one row (of B) per location the agent chose *and* the env then looked at:
    ``T - 1`` rows, or ``T`` when the agent picks its first glimpse too (the location sent with the final, grading
    step is never looked at, so it has no log-probability).
    """

    logits: torch.Tensor  # B x classes, from the final state (graded by the env)
    log_probs: torch.Tensor
    baselines: torch.Tensor
    reward: torch.Tensor  # B, the episode's return
    labels: torch.Tensor  # B, from the env's info at termination
    locations: torch.Tensor  # T x B x 2, where each glimpse was taken


def run_episodes(
    model: RecurrentAttentionModel,
    env: Any,
    options: dict[str, Any] | None = None,
    deterministic: bool = False,
    generator: torch.Generator | None = None,
    locations: str = "policy",
    trusted: bool = False,
) -> Episodes:
    """Reset ``env`` (a GlimpseMNIST vector env) and play one episode in every slot.

    ``locations``: ``"policy"`` (the model's location policy, sampled or, with ``deterministic``, its mean), or
    the non-learning baselines ``"random"`` (uniform in ``[-1, 1]``) and ``"center"``, which keep the model's
    glimpse network, core and classifier. Gradients flow as the model defines (call under ``torch.no_grad()`` to
    evaluate).

    ``trusted`` (a trainer's own calls, on the unwrapped vector env, with ``options['indices']`` a valid tensor):
    no host sync, so a CUDA graph can hold the rollout: the env skips its checks of our tensors, and the loop plays
    the env's known ``n_glimpses`` steps instead of asking after every step whether the episodes ended.

    Many seeds at once (:mod:`agents.training.seeds`) pass a stacked model and a group of envs in their place: every
    tensor then has the seed as its first dimension (after the glimpse's, in ``log_probs``, ``baselines`` and
    ``locations``).
    """
    if locations not in LOCATION_CHOICES:
        raise ValueError(f"locations must be one of {LOCATION_CHOICES}, got {locations!r}")
    steps = env.unwrapped.config.n_glimpses if trusted else None  # the first glimpse comes with reset
    step_kwargs = {"check": False} if trusted else {}
    if trusted:
        options = {**(options or {}), "check": False}
    log_probs, baselines = [], []
    first_mean = model.first_location_mean(env.num_envs) if locations == "policy" else None
    if first_mean is not None:  # the agent chooses its first glimpse too
        if deterministic:
            first = first_mean.detach()
        else:
            first, log_prob = model.sample_location(first_mean, generator)
            log_probs.append(log_prob)
            # [..., None]: a scalar, or one per seed (many seeds at once), spread over the slots
            baselines.append(model.first_baseline.float()[..., None].expand(first_mean.shape[:-1]))
        options = {**(options or {}), "location": first}
    observation, _ = env.reset(options=options)
    state = model.initial_state(env.num_envs, observation["glimpse"].device)
    looked_at = [observation["location"]]
    total = torch.zeros(env.num_envs, device=observation["glimpse"].device)
    for taken in itertools.count(1):
        out = model(observation, state)
        state = out.state
        if locations == "random":
            uniform = torch.rand(out.location_mean.shape, generator=generator, device=out.location_mean.device)
            location, log_prob = uniform * 2.0 - 1.0, None
        elif locations == "center":
            location, log_prob = torch.zeros_like(out.location_mean), None
        elif deterministic:
            location, log_prob = out.location_mean.detach(), None
        else:
            location, log_prob = model.sample_location(out.location_mean, generator)
        action = {"location": location, "prediction": out.logits.detach().float()}
        observation, reward, terminated, _, info = env.step(action, **step_kwargs)
        total = total + reward
        if taken == steps if trusted else bool(terminated[0]):  # every slot ends together
            break
        looked_at.append(observation["location"])
        if log_prob is not None:
            log_probs.append(log_prob)
            baselines.append(out.baseline)
    stack = (lambda rows: torch.stack(rows)) if log_probs else (lambda rows: total.new_zeros(0, *total.shape))
    return Episodes(out.logits, stack(log_probs), stack(baselines), total, info["label"], torch.stack(looked_at))


@torch.no_grad()
def evaluate(
    model: RecurrentAttentionModel,
    env: Any,
    num_images: int | None = None,
    mc_samples: int = 0,
    generator: torch.Generator | None = None,
    locations: str = "policy",
    *,
    indices: torch.Tensor | None = None,
    counts: bool = False,
) -> dict[str, float]:
    """Error rates on images ``0 .. num_images - 1`` of ``env``'s split, or on the images ``indices`` names.

    ``error``: the deterministic policy (mean locations). ``mc_error`` (when ``mc_samples`` = K > 0): class
    probabilities averaged over K sampled location paths per image. ``env.num_envs`` images (or paths) are
    played at a time. ``locations`` replaces the learned policy by a non-learning baseline (see
    :func:`run_episodes`). With ``counts``, the result also holds ``wrong`` (and ``mc_wrong``) and ``num_images``:
    counts add up over shards of a split evaluated apart (one per process), where rates do not.
    """
    if indices is None:
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images must be an integer >= 1, got {num_images!r}")
        images = torch.arange(num_images, device=env.device)
    else:
        images = torch.as_tensor(indices, device=env.device)
        if images.ndim != 1 or len(images) < 1 or images.is_floating_point() or images.dtype == torch.bool:
            shape = tuple(images.shape)
            raise ValueError(f"indices must be a non-empty 1-D integer tensor, got {images.dtype} {shape}")
        if num_images is not None and num_images != len(images):
            raise ValueError(f"num_images ({num_images!r}) disagrees with the {len(images)} indices given")
        images = images.long()
    num_images = len(images)
    was_training = model.training
    model.eval()
    slots = env.num_envs
    wrong, mc_wrong = 0, 0

    def play(indices: torch.Tensor, deterministic: bool) -> tuple[torch.Tensor, torch.Tensor]:
        # One batch of env.num_envs episodes at a time (K paths of an image may outnumber the slots); the last
        # batch is padded by repeating its first index and the padding's results are dropped.
        logits, labels = [], []
        for chunk in indices.split(slots):
            padded = torch.cat([chunk, chunk[:1].expand(slots - len(chunk))])
            episodes = run_episodes(model, env, {"indices": padded}, deterministic, generator, locations)
            logits.append(episodes.logits[: len(chunk)].float())
            labels.append(episodes.labels[: len(chunk)])
        return torch.cat(logits), torch.cat(labels)

    for batch in images.split(slots):
        logits, labels = play(batch, deterministic=True)
        wrong += int((logits.argmax(1) != labels).sum())
    if mc_samples > 0:
        per_batch = max(1, slots // mc_samples)
        for batch in images.split(per_batch):
            logits, labels = play(batch.repeat_interleave(mc_samples), deterministic=False)
            probs = logits.softmax(1).view(len(batch), mc_samples, -1).mean(1)
            mc_wrong += int((probs.argmax(1) != labels.view(len(batch), mc_samples)[:, 0]).sum())
    model.train(was_training)
    result: dict[str, float] = {"error": wrong / num_images}
    if mc_samples > 0:
        result["mc_error"] = mc_wrong / num_images
    if counts:
        result.update(wrong=wrong, num_images=num_images, **({"mc_wrong": mc_wrong} if mc_samples > 0 else {}))
    return result
