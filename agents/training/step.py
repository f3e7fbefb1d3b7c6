"""One training step and what it runs under: the episode loss as one module (for DDP), the backward pass with its
clipping, the step itself with no host sync (:class:`DeviceStep`, what a CUDA graph holds), the optimizer, the
learning-rate and location-noise schedules and the order of an epoch's images."""

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
from agents.training.precision import autocast

METRIC_TERMS = ("loss", "cross_entropy", "baseline", "reinforce", "reward")


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


def make_optimizer(params: list[nn.Parameter], config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW. On CUDA a CUDA graph can hold its step: ``capturable`` (its step count stays on the device) with the
    learning rate in a device tensor that the schedule writes. On the CPU as it always was (the bits are pinned)."""
    if device.type != "cuda":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=torch.tensor(config.lr, device=device), weight_decay=config.weight_decay,
                             capturable=True)


class WrittenLR(torch.optim.lr_scheduler.LambdaLR):
    """The schedule of a tensor learning rate: run on floats (a stand-in optimizer's, so its state is an eager run's)
    and each value written into the tensor, where torch's scheduler would read the tensor back to the host (a sync)
    at every step."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr: float, lr_lambda: Any) -> None:
        self.written = [group["lr"] for group in optimizer.param_groups]
        super().__init__(torch.optim.SGD([torch.zeros(1)], lr=lr), lr_lambda)
        self.optimizer._opt_called = True  # the stand-in never steps: no warning that it did not

    def step(self, epoch: int | None = None) -> None:
        super().step(epoch)
        self.write()

    def write(self) -> None:
        for tensor, lr in zip(self.written, self.get_last_lr(), strict=True):
            tensor.fill_(lr)

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().state_dict().items() if k != "written"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        written = self.written
        super().load_state_dict(state_dict)
        self.written = written
        self.write()


def learning_rate_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                            steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        return learning_rate_factor(config, step, steps_per_epoch)

    if isinstance(optimizer.param_groups[0]["lr"], torch.Tensor):
        return WrittenLR(optimizer, config.lr, factor)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state_dict as an eager run writes it (learning rate a float, not capturable), so a checkpoint
    resumes on either path."""
    state = optimizer.state_dict()
    for group in state["param_groups"]:
        if isinstance(group["lr"], torch.Tensor):
            group.update(lr=group["lr"].item(), capturable=False)
    return state


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a checkpoint's optimizer state, keeping this optimizer's own learning-rate tensor and capturable flag
    (with its step counts on the parameters' device, as capturable Adam wants them)."""
    kept = [(group["lr"], group.get("capturable", False)) for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, (lr, capturable) in zip(optimizer.param_groups, kept, strict=True):
        if isinstance(lr, torch.Tensor):
            lr.fill_(group["lr"])
            group["lr"] = lr
        group["capturable"] = capturable
        for p in group["params"] if capturable else []:
            if "step" in optimizer.state[p]:
                optimizer.state[p]["step"] = optimizer.state[p]["step"].to(p.device, torch.float32)


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

    def __init__(self, model: RecurrentAttentionModel, env: Any, rl_weight: float, trusted: bool = False) -> None:
        super().__init__()
        self.model, self.env, self.rl_weight, self.trusted = model, env, rl_weight, trusted

    def forward(self, options: dict[str, Any]) -> tuple[HybridLoss, Episodes]:
        episodes = run_episodes(self.model, self.env, options, trusted=self.trusted)
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
    return clip_gradients(params, backward(loss, params, config), config, dist)


def backward(loss: HybridLoss, params: list[nn.Parameter], config: TrainConfig) -> list | None:
    """The backward half of :func:`backward_and_clip`: fill ``.grad``; under --clip-separately REINFORCE's
    gradients are kept apart and returned (one per parameter, None where it has none). Apart from the clipping so
    that many seeds at once (:mod:`agents.training.seeds`) make one backward of their summed losses, then clip each
    seed's own gradient."""
    if not config.clip_separately:
        loss.total.backward()  # under DDP, averaged over the ranks as it runs
        return None
    # REINFORCE's gradient kept apart, then the supervised one into .grad; each clipped, then added.
    reinforce = config.rl_weight * loss.reinforce
    if reinforce.requires_grad:
        rl_grads = list(torch.autograd.grad(reinforce, params, retain_graph=True, allow_unused=True))
    else:  # one glimpse and the env's first location: no location was chosen
        rl_grads = [None] * len(params)
    (loss.cross_entropy + loss.baseline).backward()
    return rl_grads


def clip_gradients(params: list[nn.Parameter], rl_grads: list | None, config: TrainConfig,
                   dist: Distributed) -> torch.Tensor:
    """The clipping half of :func:`backward_and_clip` (``rl_grads``: what :func:`backward` returned)."""
    clip = config.grad_clip or math.inf  # inf: measure the norm without clipping
    if rl_grads is None:
        return torch.nn.utils.clip_grad_norm_(params, clip)
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


class DeviceStep:
    """The trainer's optimizer step with no host sync and static shapes, so that one CUDA graph can hold it whole:
    reset and rollout (``step_module``, trusted), hybrid loss, backward, clipping, AdamW, the weight average, the
    skip of a non-finite step and the metric sums. Called with a batch's image indices (a device tensor).

    A step whose loss or gradient is not finite on some rank is skipped on the device: the step runs, then the
    weights, AdamW's moments and step count and the weight average (with its count) are put back as they were with
    ``torch.where``, bit for bit. On the CPU (``host_decides``), where reading a tensor waits on nothing, the host
    decides instead and a skipped step is simply not taken: the same weights, without the copies (measured: they made
    a step up to 12 ms slower on a loaded 2-core EPYC). The epoch's sums and counts stay on the device
    (:meth:`start_epoch` zeroes them in place, where a graph reads them); the trainer reads ``limit_step`` (the
    epoch's step at which ``--max-nonfinite-steps`` skipped steps in a row were reached, -1 before) when it chooses
    to."""

    def __init__(self, step_module: nn.Module, model: RecurrentAttentionModel, optimizer: torch.optim.Optimizer,
                 average: torch.optim.swa_utils.AveragedModel | None, config: TrainConfig, dist: Distributed,
                 device: torch.device, autocast_dtype: torch.dtype | None) -> None:
        self.step_module, self.model, self.optimizer, self.average = step_module, model, optimizer, average
        self.config, self.dist, self.device, self.autocast_dtype = config, dist, device, autocast_dtype
        self.params = list(model.parameters())
        self.host_decides = device.type == "cpu"
        if average is not None:  # its count decides its first update: on the device, where the update reads it
            average.n_averaged = average.n_averaged.to(device)
        self.totals = torch.zeros(len(METRIC_TERMS), device=device)
        self.nonfinite, self.bad_in_a_row, self.step_in_epoch, self.limit_step = (
            torch.full((), value, dtype=torch.int64, device=device) for value in (0, 0, 0, -1))

    def start_epoch(self) -> None:
        for counter in (self.totals, self.nonfinite, self.step_in_epoch):
            counter.zero_()
        self.limit_step.fill_(-1)

    def __call__(self, images: torch.Tensor) -> tuple[HybridLoss, Episodes]:
        with autocast(self.device, self.autocast_dtype):
            loss, episodes = self.step_module(self.options(images))
        self.optimizer.zero_grad(set_to_none=True)
        return self.after_backward(loss, episodes, backward(loss, self.params, self.config))

    def options(self, images: torch.Tensor) -> dict[str, Any]:
        """The env's reset options for a batch: each image in mc_samples slots."""
        config = self.config
        return {"indices": images.repeat_interleave(config.mc_samples),
                "slots_per_canvas": config.mc_samples if config.shared_canvas else 1}

    def after_backward(self, loss: HybridLoss, episodes: Episodes, rl_grads: list | None) -> tuple[HybridLoss,
                                                                                                   Episodes]:
        """The step once the gradients are in ``.grad`` (``rl_grads``: see :func:`backward`): clipping, the skip or
        the update, the sums. Apart so that many seeds at once (:mod:`agents.training.seeds`) run it per seed."""
        config = self.config
        grad_norm = clip_gradients(self.params, rl_grads, config, self.dist)
        ok = self.dist.all_true_on_device(torch.isfinite(loss.total) & torch.isfinite(grad_norm))
        self.update(ok)
        parts = (loss.total, loss.cross_entropy, loss.baseline, loss.reinforce, episodes.reward.mean())
        self.totals += torch.where(ok, torch.stack([part.detach().float() for part in parts]), 0.0)
        self.nonfinite += ~ok
        self.bad_in_a_row.copy_(torch.where(ok, 0, self.bad_in_a_row + 1))
        reached = (self.bad_in_a_row >= config.max_nonfinite_steps) & (self.limit_step < 0)
        self.limit_step.copy_(torch.where(reached, self.step_in_epoch, self.limit_step))
        self.step_in_epoch += 1
        return loss, episodes

    def guarded(self) -> dict[tuple, torch.Tensor]:
        """What a step changes, by a name that outlives the tensors' views: the weights, AdamW's state (moments, step
        count), the weight average and its count."""
        tensors = {("weight", i): p.detach() for i, p in enumerate(self.params)}
        for i, p in enumerate(self.params):
            tensors.update({("adam", i, k): v for k, v in self.optimizer.state[p].items() if torch.is_tensor(v)})
        if self.average is not None:
            tensors.update({("average", i): p.detach() for i, p in enumerate(self.average.parameters())})
            tensors["averaged"] = self.average.n_averaged
        return tensors

    def update(self, ok: torch.Tensor) -> None:
        """AdamW's step and the average's update, undone where ``ok`` is false. AdamW's state is made by its first
        step: undone, it is zeros, which is how AdamW starts it."""
        if self.host_decides:
            if bool(ok):
                self.optimizer.step()
                if self.average is not None:
                    self.update_average()
            return
        before = {key: tensor.clone() for key, tensor in self.guarded().items()}
        self.optimizer.step()
        if self.average is not None:
            self.update_average()
        for key, tensor in self.guarded().items():
            old = before[key] if key in before else torch.zeros_like(tensor)
            tensor.copy_(torch.where(ok, tensor, old))

    @torch.no_grad()
    def update_average(self) -> None:
        """AveragedModel.update_parameters with the EMA of get_ema_multi_avg_fn, the same arithmetic, but its first
        update (a copy) chosen on the device: torch's asks ``bool(n_averaged == 0)`` on the host."""
        averaged = [p.detach() for p in self.average.parameters()]
        current = [p.detach() for p in self.params]
        lerped = torch._foreach_lerp(averaged, current, 1 - self.config.ema_decay)
        first = self.average.n_averaged == 0
        for kept, new, live in zip(averaged, lerped, current, strict=True):
            kept.copy_(torch.where(first, live, new))
        self.average.n_averaged += 1
