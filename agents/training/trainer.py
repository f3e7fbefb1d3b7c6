"""The Trainer: trains the Recurrent Attention Model on GlimpseMNIST-v0, then reports its test error.

The agent learns through the env's batched vector env (the env is the data pipeline): every training image is shown
in M slots (each with a canvas of its own, or with ``shared_canvas`` one canvas for the M), so the baseline and the
advantage see M sampled location paths of it; an epoch visits every training image once. The hybrid loss: cross-
entropy on the final class scores + MSE of the baseline against the reward + rl_weight * REINFORCE. Model selection
uses the validation split (the epoch of the lowest validation error is kept as best.pt); the test split is touched
once, at the end, by the best checkpoint.

Phases, in order (:meth:`Trainer.train`): ``check`` (the whole configuration and the inputs it names, before
anything is written), ``open`` (the run folder, locked), ``setup`` (envs, model, optimizer; a resumed run's state),
then per epoch ``train_epoch`` and ``end_epoch`` (validation, then the epoch's commit), and ``finish`` (the test,
the figures, results.json). Under torchrun every rank runs the phases; rank 0 alone writes (see
:mod:`agents.training.distributed`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import gymnasium as gym
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

import glimpse_env  # noqa: F401  (registers GlimpseMNIST-v0)
from agents import RAMConfig, RecurrentAttentionModel
from agents.checkpoint import read_checkpoint
from agents.pretrained import resolve_checkpoint
from agents.training import evaluation
from agents.training.config import ConfigError, TrainConfig, check_config
from agents.training.cuda_graph import GraphedStep
from agents.training.distributed import Distributed, rank_seed
from agents.training.evaluation import format_result
from agents.training.precision import AUTOCAST_DTYPES, precision_in_use, precision_note
from agents.training.presets import PRESETS
from agents.training.run_folder import Run, read_last_checkpoint, restore_rng_states, rng_states
from agents.training.step import (
    METRIC_TERMS,
    DeviceStep,
    EpisodeLoss,
    epoch_order,
    learning_rate_scheduler,
    load_optimizer_state,
    location_std,
    make_optimizer,
    optimizer_state,
    wrap_for_ddp,
)
from glimpse_env.cli import flag_message
from glimpse_env.data import SPLIT_SIZES, load_digits
from glimpse_env.files import file_sha256
from glimpse_env.vector_env import resolve_device

# A run's figures, drawn by rank 0 at the end into its folder: figures(run_dir, data_dir).
Figures = Callable[[Path, "str | None"], object]
# On CUDA the device's count of skipped steps is read this often (and at each epoch's end): a read is a host sync.
# On the CPU it is read after every step, where a read costs nothing.
NONFINITE_CHECK_EVERY = 50


class Trainer:
    """One run of ``config`` (``resume``: continue the run in ``config.run_dir``). ``figures`` draws the run's
    figures at the end (the command line passes :func:`agents.figures.draw_run_figures`); None: no figures."""

    def __init__(self, config: TrainConfig, command: list[str], resume: bool = False,
                 dist: Distributed | None = None, figures: Figures | None = None) -> None:
        self.config, self.command, self.resume = config, command, resume
        self.dist = dist or Distributed()
        self.figures = figures
        self.folder: Run | None = None  # rank 0's
        self.env = self.val_env = None

    def train(self) -> dict:
        """The phases in turn; the run's results (those of the finished run, for a resume of one)."""
        try:
            self.check()
            finished = self.open()
            if finished is not None:
                return finished
            self.setup()
            for epoch in range(self.start_epoch, self.config.epochs + 1):
                self.train_epoch(epoch)
                self.end_epoch(epoch)
            return self.finish()
        finally:
            self.cleanup()

    # ------------------------------------------------------------ check and open
    def check(self) -> None:
        """Everything the run needs, checked before anything is written: a ConfigError naming the flag."""
        config, dist = self.config, self.dist
        check_config(config, dist.world_size)
        self.batch = config.batch_size // dist.world_size  # this rank's images of every batch
        self.num_val = min(config.val_subset or SPLIT_SIZES["validation"], SPLIT_SIZES["validation"])
        device = resolve_device(config.device)
        if device.type == "cuda" and "nccl" in dist.backend:
            device = torch.device("cuda", dist.local_rank)
        self.device = device
        self.precision = precision_in_use(config.precision, device)  # decided once: "bf16" or "fp32"
        self.autocast_dtype = AUTOCAST_DTYPES[self.precision]
        dist.from_rank0(self.check_inputs)

    def check_inputs(self) -> None:
        """The files the configuration names: the MNIST folder and --init-from (a resumed run's files are checked
        when they are read, before anything is written)."""
        config = self.config
        try:
            load_digits("train", config.data_dir or None, self.device)
        except (OSError, ValueError, RuntimeError) as error:
            where = config.data_dir or "the MNIST folder ($GLIMPSE_MNIST_DIR)"
            raise ConfigError(flag_message("--data-dir", f"{where}: {error}")) from error
        resumed = self.resume and (Path(config.run_dir) / "last.pt").is_file()
        if config.init_from and not resumed:
            load_init_weights(RecurrentAttentionModel(config.model_config()).to(self.device), config, self.device)

    def open(self) -> dict | None:
        """Open (and lock) the run folder on rank 0; the results of a finished run asked to go on as it was."""
        def open_run() -> tuple[str, bool, dict | None]:
            config = self.config
            if not config.run_dir:
                config.run_dir = f"runs/{config.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
            self.folder = Run(config, self.command, self.resume)
            resuming = (self.folder.dir / "last.pt").is_file()
            if self.resume and (self.folder.dir / "results.json").is_file():
                finished = json.loads((self.folder.dir / "results.json").read_text())
                if finished.get("epochs") == config.epochs:
                    print(f"{self.folder.dir} is finished ({config.epochs} epochs, results.json): nothing to do (a "
                          f"larger --epochs trains on)")
                    return config.run_dir, resuming, finished
                if not resuming:
                    raise SystemExit(f"{self.folder.dir} is finished and has no last.pt to continue from")
            return config.run_dir, resuming, None

        self.config.run_dir, self.resuming, finished = self.dist.from_rank0(open_run)
        self.run_dir = Path(self.config.run_dir)
        return finished

    # ------------------------------------------------------------ setup
    def setup(self) -> None:
        """Envs, model, optimizer and schedule from the run's seed; then a resumed run's state."""
        config, dist, device = self.config, self.dist, self.device
        note = precision_note(config.precision, PRESETS.get(config.preset, {}).get("precision"), device)
        if note:
            print(note)
        torch.manual_seed(config.seed)
        self.seed = rank_seed(config.seed, dist.rank)  # this rank's env and location noise
        data_dir = config.data_dir or None
        self.env = gym.make_vec("GlimpseMNIST-v0", num_envs=self.batch * config.mc_samples, device=device,
                                split="train", data_dir=data_dir, **config.env_kwargs())
        self.val_images = dist.shard(torch.arange(self.num_val))
        self.val_env = gym.make_vec("GlimpseMNIST-v0", num_envs=min(config.eval_slots, len(self.val_images)),
                                    device=device, split="validation", data_dir=data_dir, **config.env_kwargs())
        self.env.reset(seed=self.seed)
        self.num_train = len(self.env.unwrapped.digits)
        if config.train_subset:
            self.num_train = min(self.num_train, config.train_subset)
        self.model = RecurrentAttentionModel(RAMConfig.from_spaces(
            self.env.single_observation_space, self.env.single_action_space, **config.model_kwargs())).to(device)
        self.optimizer = make_optimizer(list(self.model.parameters()), config, device)
        self.steps_per_epoch = math.ceil(self.num_train / config.batch_size)
        self.scheduler = learning_rate_scheduler(self.optimizer, config, self.steps_per_epoch)
        self.order_generator = torch.Generator().manual_seed(config.seed)  # the global order: the same on every rank
        self.env_generator = self.env.unwrapped._generator
        self.start_epoch, self.best_val, self.best_epoch = 1, float("inf"), 0
        if config.init_from and not self.resuming:  # on rank 0; the others get its weights below
            dist.from_rank0(lambda: self.folder.write_text(
                "init_from.json", json.dumps(initialise_from(self.model, config, device), indent=2) + "\n"))
        dist.broadcast_weights(self.model)  # every rank starts from rank 0's weights
        if dist.active and not dist.main:
            torch.manual_seed(self.seed)  # rank 0's location noise goes on from the run's seed, as one process's does
        # The averaged weights, when --ema-decay asks for them: updated after each step, they are what is validated,
        # kept as best.pt and tested. Made after --init-from and the broadcast, so they start from those weights.
        self.average = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay)) \
            if config.ema_decay else None
        wall_before = self.restore()
        episode_loss = EpisodeLoss(self.model, self.env, config.rl_weight, trusted=True)  # no host sync, no checks
        self.step_module = wrap_for_ddp(episode_loss, config, dist, device)
        self.device_step = DeviceStep(self.step_module, self.model, self.optimizer, self.average, config, dist,
                                      device, self.autocast_dtype)
        self.run_step = GraphedStep(self.device_step, config.cuda_graph, device, dist, self.env_generator)
        self.started = time.perf_counter() - wall_before
        self.last_val_error = "-" if self.start_epoch == 1 else f"{100 * self.best_val:.2f}% (best)"

    def restore(self) -> float:
        """A resumed run's state from its last.pt, its folder made to agree with it; the wall time it had run."""
        config, dist = self.config, self.dist
        payload, wall_before = None, 0.0
        if self.resuming:
            payload = dist.from_rank0(lambda: read_last_checkpoint(self.run_dir, config, self.device, dist))
            state = payload["extra"]["state"]
            self.model.load_state_dict(payload["model"])
            load_optimizer_state(self.optimizer, payload["extra"]["optimizer"])
            self.scheduler.load_state_dict(payload["extra"]["scheduler"])
            if self.average is not None:
                self.average.load_state_dict(payload["extra"]["average"])
            self.start_epoch, self.best_val = state["epoch"] + 1, state["best_val_error"]
            wall_before = state["wall_seconds"]
            self.best_epoch = state.get("best_epoch", 0)  # 0: written before last.pt recorded it
            print(f"resuming {self.run_dir} at epoch {self.start_epoch} (best validation error "
                  f"{100 * self.best_val:.2f}%)")
        if self.resume:
            def settle() -> None:
                self.folder.settle(payload)
                self.folder.record_epochs(config.epochs)

            dist.from_rank0(settle)
        if payload is not None:  # last: reading a checkpoint builds a model, which draws from torch's generator
            state = payload["extra"]["state"]
            own = state["ranks"][dist.rank] if dist.active else state
            restore_rng_states(own, self.device, self.order_generator, self.env_generator)
        return wall_before

    # ------------------------------------------------------------ an epoch
    def train_epoch(self, epoch: int) -> None:
        """One pass over the training images, a step per batch."""
        config, dist = self.config, self.dist
        order = self.begin_epoch(epoch)
        bar = tqdm(range(self.steps_per_epoch), desc=f"epoch {epoch}/{config.epochs}", leave=False, mininterval=1.0,
                   disable=None if dist.main else True)
        for step in bar:
            loss, episodes = self.train_step(epoch, step, self.step_images(order, step))
            if step % 50 == 0 and dist.main:
                bar.set_postfix(loss=f"{loss.total.item():.3f}", reward=f"{episodes.reward.mean().item():.3f}",
                                val_error=self.last_val_error)
        self.train_seconds = time.perf_counter() - self.epoch_start

    def begin_epoch(self, epoch: int) -> torch.Tensor:
        """The epoch's start: the model's mode and location noise, its clock, its sums; its order of the images."""
        config = self.config
        self.model.train()
        # The noise of this epoch's location samples; a checkpoint records the one its model was trained with last.
        self.model.config = dataclasses.replace(self.model.config, loc_std=location_std(config, epoch))
        self.epoch_start = time.perf_counter()
        # Drawn on the CPU as always, then on the device at once: no copy from the host at each step.
        order = epoch_order(self.num_train, self.steps_per_epoch * config.batch_size, self.order_generator)
        self.device_step.start_epoch()  # the epoch's sums and counts, on the device
        return order.to(self.device)

    def step_images(self, order: torch.Tensor, step: int) -> torch.Tensor:
        """This rank's share of the images of the epoch's batch ``step``."""
        images = order[step * self.config.batch_size:(step + 1) * self.config.batch_size]
        return images[self.dist.rank * self.batch:(self.dist.rank + 1) * self.batch]

    def train_step(self, epoch: int, step: int, images: torch.Tensor) -> tuple:
        """One optimizer step on ``images`` (this rank's share of the batch), or none when the loss or the gradient
        is not finite on some rank (every rank then skips it): :class:`DeviceStep`, replayed from a CUDA graph
        where one was captured."""
        loss, episodes = self.run_step(images)
        self.after_step(epoch, step)
        return loss, episodes

    def after_step(self, epoch: int, step: int) -> None:
        """The schedule's step and, when it is time to read it, the check of the non-finite steps in a row."""
        self.scheduler.step()  # the schedule follows the step count, taken or skipped
        if self.device.type == "cpu" or (step + 1) % NONFINITE_CHECK_EVERY == 0 or step + 1 == self.steps_per_epoch:
            self.stop_if_nonfinite(epoch)

    def stop_if_nonfinite(self, epoch: int) -> None:
        """Stop once --max-nonfinite-steps steps in a row were skipped. On CUDA this is read every
        NONFINITE_CHECK_EVERY steps: the steps between are taken or skipped as ever, so nothing non-finite reaches
        the weights, and the message names the step that reached the limit."""
        reached = int(self.device_step.limit_step)
        if reached >= 0:
            kept = f"{self.run_dir / 'last.pt'} (epoch {epoch - 1}) is intact" if epoch > 1 else "nothing was saved"
            raise SystemExit(f"epoch {epoch}, step {reached + 1}/{self.steps_per_epoch}: "
                             f"{self.config.max_nonfinite_steps} steps in a row had a NaN or inf loss or gradient; "
                             f"stopping ({kept}). Try a lower --lr or --grad-clip")

    def validate(self, model: RecurrentAttentionModel) -> dict:
        return evaluation.validate(model, self.val_env, self.val_images, self.num_val, self.config, self.seed,
                                   self.device, self.autocast_dtype, self.dist)

    def end_epoch(self, epoch: int) -> None:
        """Validate the kept weights (the average with --ema-decay), then commit the epoch: last.pt, best.pt when
        validation improved, the metrics line."""
        config, dist = self.config, self.dist
        kept = self.model  # the weights that are validated, kept as best.pt and tested
        if self.average is not None:
            kept = self.average.module
            kept.config = self.model.config  # this epoch's loc_std, recorded with the weights
            live = self.validate(self.model)
        val = self.validate(kept)
        self.nonfinite = int(self.device_step.nonfinite)
        taken = self.steps_per_epoch - self.nonfinite
        totals = dist.sum(self.device_step.totals.clone())  # a copy: a captured graph adds into the original
        means = (totals / dist.world_size / taken).tolist()  # NaN if none was taken: null
        metrics = {"epoch": epoch, **dict(zip(METRIC_TERMS, means, strict=True)),
                   "nonfinite_steps": self.nonfinite, "val_error": val["error"],
                   "lr": self.scheduler.get_last_lr()[0],
                   "epoch_seconds": round(time.perf_counter() - self.epoch_start, 2),
                   "train_episodes_per_second": round(self.steps_per_epoch * self.batch * config.mc_samples
                                                      * dist.world_size / self.train_seconds),
                   "wall_seconds": round(time.perf_counter() - self.started, 1)}
        if "mc_error" in val:
            metrics["val_mc_error"] = val["mc_error"]
        if self.average is not None:
            metrics["val_error_live"] = live["error"]
        self.last_val_error = f"{100 * val['error']:.2f}%"
        selection = val.get("mc_error", val["error"])
        improved = selection < self.best_val  # the lowest error; the same on every rank: the counts were summed
        if improved:
            self.best_val, self.best_epoch = selection, epoch
        state = {"epoch": epoch, "best_val_error": self.best_val, "best_epoch": self.best_epoch,
                 "wall_seconds": metrics["wall_seconds"],
                 **rng_states(self.device, self.order_generator, self.env_generator)}
        if dist.active:  # every rank's random streams, so that each goes on where it stopped
            state.update(world_size=dist.world_size,
                         ranks=dist.gather(rng_states(self.device, self.order_generator, self.env_generator)))
        if dist.main:
            self.commit(kept, metrics, state, improved)

    def commit(self, kept: RecurrentAttentionModel, metrics: dict, state: dict, improved: bool) -> None:
        """last.pt first: it commits the epoch; best.pt and the metrics line follow from it (see Run.settle)."""
        config = self.config
        # The run's configuration once (its loc_std is the schedule's start; the model's, in model_config, this
        # epoch's): no copy of the model's flags beside it.
        extra = {"train_config": asdict(config), "metrics": metrics}
        averaged = {"average": self.average.state_dict()} if self.average is not None else {}
        self.folder.save("last.pt", self.model, config.env_kwargs(),
                         {**extra, "optimizer": optimizer_state(self.optimizer),
                          "scheduler": self.scheduler.state_dict(), "state": state, **averaged})
        if improved:
            self.folder.save("best.pt", kept, config.env_kwargs(), extra)
        self.folder.log(metrics)
        tqdm.write(f"epoch {metrics['epoch']:3d}  loss {metrics['loss']:.4f}  train reward {metrics['reward']:.4f}  "
                   f"val error {100 * metrics['val_error']:.2f}%{' *' if improved else ''}  "
                   f"{metrics['epoch_seconds']:.1f}s ({metrics['train_episodes_per_second']} episodes/s)")

    # ------------------------------------------------------------ the end
    def finish(self) -> dict:
        """The test of best.pt (split over the ranks under torchrun), the figures, results.json."""
        config, dist = self.config, self.dist
        self.env.close()
        self.val_env.close()

        def best_checkpoint() -> dict:
            if not (self.run_dir / "best.pt").is_file():
                raise SystemExit(f"{self.run_dir} has no best.pt: no epoch was trained (epochs={config.epochs})")
            return read_checkpoint(self.run_dir / "best.pt") if dist.active else {}

        best = dist.from_rank0(best_checkpoint)
        if dist.active:  # the best epoch's weights and its location noise
            self.model.config = RAMConfig(**best["model_config"])
            self.model.load_state_dict(best["model"])
            test = evaluation.distributed_test(self.model, config, self.device, dist)
        else:
            test = evaluation.evaluate_checkpoint(self.run_dir / "best.pt", "test", config.test_mc, str(self.device),
                                                  config.eval_slots, config.seed, config.data_dir or None,
                                                  num_images=config.test_subset or None)
        # test_images says what the test figures are of: below the split's 10,000 (--test-subset), not its error.
        test_images = config.test_subset or evaluation.SPLIT_SIZES["test"]
        results = {"preset": config.preset, "test": test, "test_images": test_images, "best_val_error": self.best_val,
                   "epochs": config.epochs, "wall_seconds": round(time.perf_counter() - self.started, 1),
                   "device": str(self.device), "precision": self.precision,
                   "threads": torch.get_num_threads(), "world_size": dist.world_size,
                   "cuda_graph": self.run_step.status,
                   "command": " ".join(self.command)}
        if test_images < evaluation.SPLIT_SIZES["test"]:
            results["test_note"] = (f"--test-subset {test_images}: the first {test_images} of the test split's "
                                    f"{evaluation.SPLIT_SIZES['test']:,} images, not the split's error")
        return dist.from_rank0(lambda: self.write_results(results))

    def write_results(self, results: dict) -> dict:
        if self.config.figure and self.figures is not None:
            try:
                self.figures(self.run_dir, self.config.data_dir or None)
            except Exception as error:  # a figure costs only itself, never the run's results
                print(f"warning: the figures were not drawn ({type(error).__name__}: {error}); the run's results "
                      f"are kept", file=sys.stderr)
        self.folder.write_text("results.json", json.dumps(results, indent=2) + "\n")  # last: marks the run finished
        subset = " (--test-subset: not the test split's error)" if "test_note" in results else ""
        print(f"{self.config.preset}: {format_result(results['test'])}{subset}; best validation error "
              f"{100 * self.best_val:.2f}%; {results['wall_seconds'] / 60:.1f} min on {self.device}"
              f"{f' x {self.dist.world_size} processes' if self.dist.active else ''}; run folder {self.run_dir}")
        return results

    def cleanup(self) -> None:
        for env in (self.env, self.val_env):
            if env is not None:
                env.close()
        if self.folder is not None:
            self.folder.close()


def train(config: TrainConfig, command: list[str], resume: bool = False, dist: Distributed | None = None,
          figures: Figures | None = None) -> dict:
    """Train ``config`` (see :class:`Trainer`); its results."""
    return Trainer(config, command, resume, dist, figures).train()


def load_init_weights(model: RecurrentAttentionModel, config: TrainConfig,
                      device: torch.device) -> tuple[list[str], dict, Path]:
    """Load --init-from's weights into ``model``: the same architecture and retina; how gradients flow, the location
    noise and a learned first glimpse (absent from a checkpoint trained without one) may differ, and so may the
    task, for a curriculum: translated -> cluttered, fewer distractors -> more, fewer glimpses -> more (the model
    does not depend on the canvas, the clutter or the number of glimpses; locations are relative to the canvas).
    The names of the weights the checkpoint lacks (new in this run), the task's differences and the file read; a
    ConfigError for a checkpoint that does not fit."""
    try:
        path = resolve_checkpoint(config.init_from)  # a path, or the name of a shipped agent
        payload = read_checkpoint(path, device)
    except (FileNotFoundError, ValueError) as error:
        raise ConfigError(flag_message("--init-from", f"{config.init_from}: {error}")) from error
    free = {"loc_std", "reinforce_core", "learn_first_location"}
    ours = {k: v for k, v in dataclasses.asdict(model.config).items() if k not in free}
    theirs = {k: v for k, v in payload["model_config"].items() if k not in free}
    if ours != theirs:
        diff = {k: (theirs.get(k), v) for k, v in ours.items() if theirs.get(k) != v}
        raise ConfigError(flag_message("--init-from", f"{path}: another architecture or retina ({diff}, checkpoint "
                                                      f"vs this run)"))
    missing, unexpected = model.load_state_dict(payload["model"], strict=False)
    if unexpected or set(missing) - {"first_location_logit", "first_baseline"}:
        raise ConfigError(flag_message("--init-from", f"{path}: weights do not fit (missing {missing}, unexpected "
                                                      f"{unexpected})"))
    task = {k: (payload["env_kwargs"].get(k), v) for k, v in config.env_kwargs().items()
            if payload["env_kwargs"].get(k) != v}
    return missing, task, Path(path)


def initialise_from(model: RecurrentAttentionModel, config: TrainConfig, device: torch.device) -> dict:
    """Start ``model`` from --init-from's weights (see :func:`load_init_weights`), saying so. Returns what the run
    folder keeps as init_from.json: the name or path given, the file read and its SHA-256, so a record names the
    exact input even after a shipped agent of that name is retrained."""
    missing, task, path = load_init_weights(model, config, device)
    print(f"initialised from {config.init_from}" + (f" (new: {', '.join(missing)})" if missing else "")
          + (f" (trained on another task: {task}, checkpoint vs this run)" if task else ""))
    return {"init_from": config.init_from, "file": str(path), "sha256": file_sha256(path)}
