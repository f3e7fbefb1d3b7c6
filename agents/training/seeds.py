"""Many seeds at once (``train/ram_agent.py --seeds 0,1,2``): N independent runs in one process, their model's
forward and backward one batched computation.

Each seed is a :class:`~agents.training.trainer.Trainer` of its own, with its own run folder (``ROOT/seed<N>``), env,
model, optimizer, schedule and random streams, checked, opened and set up as a lone run of that seed is. Only the
training step is shared (:class:`SeedGroup`): the seeds' weights are stacked (``torch.stack`` of each model's own
parameters, so the gradients land in each model's ``.grad``) and :func:`agents.rollout.run_episodes` plays every
seed's episodes at once with the model vmapped over the stack (:class:`StackedModel`) and the N envs stepped in a loop
(:class:`EnvGroup`: each seed keeps its env and its env's generator, so its stream is a lone run's). The N hybrid
losses are summed for one backward; then each seed's own :class:`~agents.training.step.DeviceStep` clips its own
gradient, skips a non-finite step or takes it with its own AdamW, and adds up its metrics. Validation, the epoch's
commit, the test and results.json are each seed's Trainer's.

torch's global generator is one per process, and a lone run draws its location noise and its model's initialisation
from it: each seed keeps its own copy (:class:`SeedStreams`), which is the global one while that seed's Trainer runs
and the generator its location noise is drawn from (outside vmap, per seed) in the shared step. The env is not
batched across seeds (N envs, one after the other); the step runs eagerly (no CUDA graph).

On the CPU a group's weights and metrics match the lone runs' within float32 rounding, not bit for bit: vmap turns
each seed's ``mm`` into a batched matmul whose sums may be ordered differently (tests/test_seeds.py measures it).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.func import functional_call, vmap
from tqdm import tqdm

from agents import HybridLoss, RecurrentAttentionModel, hybrid_loss, run_episodes
from agents.ram import State, StepOutput
from agents.rollout import Episodes
from agents.training.config import ConfigError, TrainConfig
from agents.training.precision import autocast
from agents.training.step import backward
from agents.training.trainer import Figures, Trainer
from glimpse_env.cli import flag_message


class SeedStreams:
    """A seed's copy of torch's global random state (the CPU's, and on CUDA the device's): the global state while
    :meth:`as_global` holds, and :attr:`noise`, the generator its location noise draws from in the shared step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.Generator().set_state(torch.get_rng_state())
        self.cuda = torch.Generator(device).set_state(torch.cuda.get_rng_state(device)) \
            if device.type == "cuda" else None

    @property
    def noise(self) -> torch.Generator:
        """The generator a lone run's ``torch.randn(..., device=device)`` draws from: the device's."""
        return self.cuda if self.cuda is not None else self.cpu

    @contextmanager
    def as_global(self) -> Iterator[None]:
        torch.set_rng_state(self.cpu.get_state())
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda.get_state(), self.device)
        try:
            yield
        finally:
            self.cpu.set_state(torch.get_rng_state())
            if self.cuda is not None:
                self.cuda.set_state(torch.cuda.get_rng_state(self.device))


def stack_state(state: State, count: int) -> State:
    """``count`` copies of a model state, stacked on a new first dimension (the seed)."""
    if isinstance(state, tuple):
        return tuple(torch.stack([part] * count) for part in state)
    return torch.stack([state] * count)


class StackedModel:
    """N models of one architecture as one for :func:`~agents.rollout.run_episodes`: every tensor it takes and
    gives has the seed as its first dimension. The weights are each model's own parameters stacked (rebuilt for
    each step, after the optimizers moved them); the forward is ``vmap`` of ``functional_call`` over them, with the
    core written out (:func:`agents.ram.cell_by_ops`: torch's fused cells have no batching rule). Location noise is
    drawn per seed from ``generators`` (each seed's stream, as in a lone run), then the samples of all made at once by
    the model's own :meth:`~agents.ram.RecurrentAttentionModel.sample_location` (elementwise; no vmap: log_ndtr has
    no batching rule)."""

    def __init__(self, models: list[RecurrentAttentionModel], generators: list[torch.Generator]) -> None:
        self.base, self.count, self.generators = models[0], len(models), generators
        self.config = self.base.config  # the run's architecture and this epoch's loc_std: the same for every seed
        named = [dict(model.named_parameters()) for model in models]
        self.params = {name: torch.stack([each[name] for each in named]) for name in named[0]}

    @property
    def first_baseline(self) -> torch.Tensor:
        return self.params["first_baseline"]

    def first_location_mean(self, batch_size: int) -> torch.Tensor | None:
        if not self.config.learn_first_location:
            return None
        method = _Method(self.base, "first_location_mean")
        params = {f"model.{name}": value for name, value in self.params.items()}
        return vmap(lambda own: functional_call(method, own, (batch_size,)))(params)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        return stack_state(self.base.initial_state(batch_size, device), self.count)

    def __call__(self, observation: dict[str, torch.Tensor], state: State) -> StepOutput:
        def step(params: dict, observation: dict, state: State) -> StepOutput:
            return functional_call(self.base, params, (observation, state), {"core_by_ops": True})

        return StepOutput(*vmap(step)(self.params, observation, state))

    def sample_location(self, location_mean: torch.Tensor, generator: torch.Generator | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        shape, device = location_mean.shape[1:], location_mean.device
        noise = torch.stack([torch.randn(shape, generator=own, device=device) for own in self.generators])
        return self.base.sample_location(location_mean, noise=noise)  # elementwise: all seeds at once


class _Method(torch.nn.Module):
    """A model's method as a module's forward, for ``functional_call`` (which calls forward only)."""

    def __init__(self, model: torch.nn.Module, method: str) -> None:
        super().__init__()
        self.model, self.method = model, method

    def forward(self, *args: Any) -> Any:
        return getattr(self.model, self.method)(*args)


class EnvGroup:
    """N GlimpseMNIST vector envs (one per seed) as one for :func:`~agents.rollout.run_episodes`, stepped one after
    the other: reset options (``indices``, ``location``), actions and everything returned carry the seed as their
    first dimension. Only the trusted rollout's calls (``check=False``) are supported, as the trainer makes them."""

    PER_SEED = ("indices", "location")  # the reset options that differ by seed

    def __init__(self, envs: list[Any]) -> None:
        self.envs = [env.unwrapped for env in envs]
        self.unwrapped = self
        self.config = self.envs[0].config
        self.num_envs = self.envs[0].num_envs

    def reset(self, options: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
        observations = []
        for i, env in enumerate(self.envs):
            own = {key: value[i] if key in self.PER_SEED else value for key, value in options.items()}
            observations.append(env.reset(options=own)[0])
        return stack_dicts(observations), {}

    def step(self, action: dict[str, torch.Tensor], check: bool = True) -> tuple:
        results = [env.step({key: value[i] for key, value in action.items()}, check=check)
                   for i, env in enumerate(self.envs)]
        observations, rewards, terminated, truncated, infos = zip(*results, strict=True)
        return (stack_dicts(observations), torch.stack(rewards), torch.stack(terminated), torch.stack(truncated),
                {key: torch.stack([info[key] for info in infos]) for key, value in infos[0].items()
                 if torch.is_tensor(value)})  # the label, at the episodes' end


def stack_dicts(dicts: tuple | list) -> dict[str, torch.Tensor]:
    return {key: torch.stack([each[key] for each in dicts]) for key in dicts[0]}


def seed_episodes(episodes: Episodes, i: int) -> Episodes:
    """Seed ``i``'s episodes from a group's (the seed is the first dimension, after the glimpse's where there is
    one)."""
    logits, log_probs, baselines, reward, labels, locations = episodes
    return Episodes(logits[i], log_probs[:, i], baselines[:, i], reward[i], labels[i], locations[:, i])


class SeedGroup:
    """The runs of ``configs`` (one per seed, each with its own run folder), trained at once: the phases of
    :meth:`Trainer.train` for each seed, the training step shared. A seed stopped by its non-finite steps stops
    alone, as its lone run would; the others go on, and the group then exits saying which stopped."""

    def __init__(self, configs: list[TrainConfig], command: list[str], resume: bool = False,
                 figures: Figures | None = None) -> None:
        self.trainers = [Trainer(config, [*command, f"# seed {config.seed} of {len(configs)} at once"], resume,
                                 figures=figures) for config in configs]
        self.streams: dict[int, SeedStreams] = {}
        self.stopped: dict[int, str] = {}

    def train(self) -> dict[int, dict]:
        """Every seed's results (by seed), once every seed finished."""
        try:
            results = self.start()
            running = [t for t in self.trainers if t.config.seed not in results]
            last = max((t.config.epochs for t in running), default=0)
            for epoch in range(min((t.start_epoch for t in running), default=1), last + 1):
                now = [t for t in running if t.start_epoch <= epoch <= t.config.epochs
                       and t.config.seed not in self.stopped]
                self.train_epoch(epoch, now)
                for trainer in now:
                    if trainer.config.seed not in self.stopped:
                        with self.streams[trainer.config.seed].as_global():
                            trainer.end_epoch(epoch)
            for trainer in running:
                if trainer.config.seed not in self.stopped:
                    with self.streams[trainer.config.seed].as_global():
                        results[trainer.config.seed] = trainer.finish()
        finally:
            for trainer in self.trainers:
                trainer.cleanup()
        if self.stopped:
            raise SystemExit("\n".join(f"seed {seed}: {why}" for seed, why in self.stopped.items()))
        return {seed: results[seed] for seed in sorted(results)}

    def start(self) -> dict[int, dict]:
        """Every seed checked (before anything is written), opened, and set up unless it is finished; the results
        of the finished ones, by seed."""
        self.check_alike()
        for trainer in self.trainers:
            trainer.check()
        results = {}
        for trainer in self.trainers:
            finished = trainer.open()
            if finished is not None:
                results[trainer.config.seed] = finished
        for trainer in self.trainers:
            if trainer.config.seed not in results:
                trainer.setup()  # torch.manual_seed(seed) and the seed's draws: then its streams are kept
                self.streams[trainer.config.seed] = SeedStreams(trainer.device)
                trainer.run_step.status = "off (--seeds: the seeds' shared step runs eagerly)"
        return results

    def check_alike(self) -> None:
        """The seeds share a step, so their runs must be one configuration but for the seed and the folder (a group's
        resume reads each seed's own config.json, which could have been written by another command)."""
        def rest(config: TrainConfig) -> dict:
            return {k: v for k, v in dataclasses.asdict(config).items() if k not in ("seed", "run_dir")}

        first = self.trainers[0].config
        for trainer in self.trainers[1:]:
            differ = {k: (v, rest(trainer.config)[k]) for k, v in rest(first).items() if rest(trainer.config)[k] != v}
            if differ:
                raise ConfigError(flag_message("--seeds", f"{first.run_dir} and {trainer.config.run_dir} are not one "
                                               f"configuration but for the seed ({differ}); the seeds of a group "
                                               f"share their training step"))

    def train_epoch(self, epoch: int, trainers: list[Trainer]) -> None:
        """One epoch of every seed in ``trainers``: their batches stepped at once."""
        orders = [trainer.begin_epoch(epoch) for trainer in trainers]
        start = time.perf_counter()
        steps = max((t.steps_per_epoch for t in trainers), default=0)
        for step in tqdm(range(steps), desc=f"epoch {epoch} ({len(trainers)} seeds)", leave=False, mininterval=1.0):
            live = [(t, order) for t, order in zip(trainers, orders, strict=True)
                    if t.config.seed not in self.stopped]
            if not live:
                break
            self.step([t for t, _ in live], [t.step_images(order, step) for t, order in live])
            for trainer, _ in live:
                try:
                    trainer.after_step(epoch, step)
                except SystemExit as stop:  # this seed's non-finite steps: it stops alone
                    self.stopped[trainer.config.seed] = str(stop)
                    print(f"seed {trainer.config.seed}: {stop}")
        seconds = time.perf_counter() - start
        for trainer in trainers:
            trainer.train_seconds = seconds  # the group's: each seed's episodes/s is the group's divided by N

    def step(self, trainers: list[Trainer], images: list[torch.Tensor]) -> None:
        """One optimizer step of each seed: the episodes and losses of all at once, one backward of their sum, then
        each seed's own clipping, skip or update, and sums (:meth:`DeviceStep.after_backward`)."""
        first = trainers[0]
        steps = [trainer.device_step for trainer in trainers]
        model = StackedModel([t.model for t in trainers], [self.streams[t.config.seed].noise for t in trainers])
        options = {**steps[0].options(images[0]),
                   "indices": torch.stack([s.options(own)["indices"] for s, own in zip(steps, images, strict=True)])}
        with autocast(first.device, first.autocast_dtype):
            episodes = run_episodes(model, EnvGroup([t.env for t in trainers]), options, trusted=True)
            each = [seed_episodes(episodes, i) for i in range(len(trainers))]
            losses = [hybrid_loss(own, first.config.rl_weight) for own in each]
        for trainer in trainers:
            trainer.optimizer.zero_grad(set_to_none=True)
        # Seeds share no weight: the sum's gradient is each seed's own, in its own model's .grad.
        summed = HybridLoss(*(torch.stack(parts).sum() for parts in zip(*losses, strict=True)))
        params = [p for s in steps for p in s.params]
        rl_grads = backward(summed, params, first.config)
        start = 0
        for s, loss, own in zip(steps, losses, each, strict=True):
            mine = None if rl_grads is None else rl_grads[start:start + len(s.params)]
            start += len(s.params)
            s.after_backward(loss, own, mine)
