"""A training run's folder: its lock, its files and the order they are written in, and every random stream a run
draws from, so that a killed run resumes exactly where it stopped.

A run folder holds config.json (the resolved configuration), command.txt, metrics.jsonl (one line per epoch),
best.pt and last.pt, results.json (last: it marks the run finished) and the figures; with --init-from, also
init_from.json (the file it started from and that file's SHA-256). last.pt is an epoch's commit
point: it is written first and holds what the epoch's other outputs need, and a resume makes metrics.jsonl and
best.pt agree with it (:meth:`Run.settle`), so a kill at any moment loses or repeats nothing. Every write is atomic
(:func:`glimpse_env.files.atomic_write`); a failed one (disk full, read-only folder) is a clear error naming the file,
with the previous version intact.

One trainer at a time: a live run folder is locked (``.lock``, an ``flock`` that the system drops when its process
ends, however it ends), and a second trainer is refused with a message naming the holder. Under torchrun only rank 0
touches the folder, so the ranks of one job are one holder.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch

from agents import RAMConfig, RecurrentAttentionModel, save_agent
from agents.checkpoint import read_checkpoint
from agents.training.config import ADDED_LATER, ConfigError, TrainConfig
from agents.training.distributed import Distributed
from glimpse_env.cli import flag_message
from glimpse_env.files import atomic_write

try:
    import fcntl
except ImportError:  # not POSIX: run folders are not locked there
    fcntl = None


class RunLock:
    """An exclusive lock on a run folder, held from :meth:`acquire` until :meth:`release` or the process's end.

    The lock file records its holder (pid, host, start time); a second trainer reads it for its refusal. A lock
    left by a killed trainer does not block: the system released its ``flock`` when the process died."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / ".lock"
        self.fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None:
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # held
                holder = os.read(fd, 4096).decode(errors="replace").strip() or "another process"
                os.close(fd)
                raise ConfigError(f"{self.path.parent} is in use by another trainer ({holder}); wait until it ends "
                                  f"or stop it, then --resume {self.path.parent}") from None
            except OSError as error:  # a file system without locks (some network ones): say so, go on unlocked
                os.close(fd)
                self.path.unlink(missing_ok=True)
                print(f"warning: {self.path.parent} cannot be locked ({error.strerror or error}); make sure no other "
                      f"trainer uses it", file=sys.stderr)
                return
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # else its holder removed it in between: lock the new one
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                     .encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still held: no other trainer can hold this file meanwhile
            os.close(self.fd)
            self.fd = None


class Run:
    """A training run's folder, opened (and locked) by rank 0; see the module's docstring."""

    def __init__(self, config: TrainConfig, command: list[str], resume: bool) -> None:
        self.dir = Path(config.run_dir)
        self.metrics_path = self.dir / "metrics.jsonl"
        self.writer = None  # TensorBoard too, when it is installed: opened by the first log
        created = not self.dir.exists()
        with self.writing(self.dir):
            self.dir.mkdir(parents=True, exist_ok=True)
        self.lock = RunLock(self.dir)
        try:
            with self.writing(self.lock.path):
                self.lock.acquire()
            self.start(config, command, resume)
        except BaseException:
            self.close()
            if created and not any(self.dir.iterdir()):
                self.dir.rmdir()  # a refused start leaves no folder behind
            raise

    def start(self, config: TrainConfig, command: list[str], resume: bool) -> None:
        started = (self.dir / "config.json").is_file() or (self.dir / "last.pt").is_file()
        if started and not resume:  # else its last.pt would be continued with this command's flags unchecked
            raise ConfigError(flag_message("--run-dir", f"{self.dir} already holds a run: continue it with --resume "
                                                        f"{self.dir}, or choose another --run-dir"))
        for stray in self.dir.glob("*.tmp"):  # left by a kill during an atomic write (no one else writes here)
            stray.unlink()
        if not started:  # written once, by the first start (config.json last: it marks the run started)
            self.write_text("command.txt", " ".join(command) + "\n")
            self.write_text("config.json", json.dumps(asdict(config), indent=2) + "\n")

    def close(self) -> None:
        self.lock.release()
        if self.writer:
            self.writer.close()
        self.writer = None

    @contextmanager
    def writing(self, path: Path) -> Iterator[None]:
        try:
            yield
        except OSError as error:
            then = f"continue with --resume {self.dir}" if (self.dir / "config.json").is_file() else "start again"
            raise SystemExit(f"could not write {path}: {error.strerror or error}. What was there before is intact; "
                             f"free some space (or make the folder writable), then {then}") from error

    def write_text(self, name: str, text: str) -> None:
        with self.writing(self.dir / name):
            atomic_write(self.dir / name, lambda file: file.write(text.encode()))

    def save(self, name: str, model: RecurrentAttentionModel, env_kwargs: dict, extra: dict) -> None:
        with self.writing(self.dir / name):
            save_agent(self.dir / name, model, env_kwargs, extra)

    def log(self, metrics: dict) -> None:
        with self.writing(self.metrics_path), self.metrics_path.open("a") as out:
            out.write(json_line(metrics) + "\n")
        if self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.dir / "tensorboard"))
            except Exception:
                self.writer = False
        if self.writer:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value) and key != "epoch":
                    self.writer.add_scalar(key, value, metrics["epoch"])
            self.writer.flush()

    def settle(self, payload: dict | None) -> None:
        """Make metrics.jsonl and best.pt agree with last.pt (``payload``; None before the first epoch was
        committed): a kill between an epoch's writes leaves them behind or ahead."""
        extra = payload["extra"] if payload else {"state": {"epoch": 0}}
        epoch = extra["state"]["epoch"]
        rows = {}
        if self.metrics_path.is_file():
            for line in self.metrics_path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
                if isinstance(row, dict) and isinstance(row.get("epoch"), int) and row["epoch"] < epoch:
                    rows.setdefault(row["epoch"], row)
        if epoch:
            rows[epoch] = extra["metrics"]
        text = "".join(json_line(rows[e]) + "\n" for e in sorted(rows))
        if text != (self.metrics_path.read_text() if self.metrics_path.is_file() else ""):
            self.write_text(self.metrics_path.name, text)
        # best.pt is written after last.pt: when last.pt's epoch was the best, best.pt may still be older.
        if epoch and extra["state"].get("best_epoch") == epoch and checkpoint_epoch(self.dir / "best.pt") != epoch:
            self.save("best.pt", kept_model(payload), payload["env_kwargs"],
                      {"train_config": extra["train_config"], "metrics": extra["metrics"]})

    def record_epochs(self, epochs: int) -> None:
        """A resume's one change to config.json: a new --epochs."""
        saved = json.loads((self.dir / "config.json").read_text())
        if saved["epochs"] != epochs:
            self.write_text("config.json", json.dumps({**saved, "epochs": epochs}, indent=2) + "\n")
            print(f"config.json: epochs {saved['epochs']} -> {epochs}")


def kept_model(payload: dict) -> RecurrentAttentionModel:
    """The model last.pt's epoch kept as best.pt: its weight average when it has one (--ema-decay), else its
    weights, with the location noise of that epoch (last.pt's model_config)."""
    model = RecurrentAttentionModel(RAMConfig(**payload["model_config"]))
    average = payload["extra"].get("average")
    if average is None:
        model.load_state_dict(payload["model"])
    else:
        model.load_state_dict({k.removeprefix("module."): v for k, v in average.items() if k.startswith("module.")})
    return model


def checkpoint_epoch(path: Path) -> int | None:
    """The epoch a checkpoint written by the trainer holds (None: no such file, or not one of ours)."""
    try:
        return read_checkpoint(path)["extra"]["metrics"]["epoch"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


def json_line(metrics: dict) -> str:
    """One line of strict JSON: a NaN or inf (not JSON) is written as null."""
    finite = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}
    return json.dumps(finite, allow_nan=False)


def read_last_checkpoint(run_dir: Path, config: TrainConfig, device: torch.device, dist: Distributed) -> dict:
    """last.pt, checked against this run's configuration and number of processes (read onto the CPU for a
    broadcast when there are several)."""
    try:
        payload = read_checkpoint(run_dir / "last.pt", "cpu" if dist.active else device)
        saved_config = payload["extra"]["train_config"]
        state = payload["extra"]["state"]
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(flag_message("--resume", f"{run_dir}: its last.pt cannot be continued from ({error})")) \
            from error
    # The model's flags as the run's configuration holds them (a field added later: the behaviour before it).
    saved_model = {name: saved_config.get(name, ADDED_LATER.get(name)) for name in config.model_kwargs()}
    if saved_model != config.model_kwargs() or payload["env_kwargs"] != config.env_kwargs():
        raise ConfigError(flag_message("--resume", f"{run_dir}: its last.pt was trained with another configuration; "
                                                   f"refusing to resume"))
    saved_world = state.get("world_size", 1)  # absent: written by one process
    if saved_world != dist.world_size:
        how = "python train/ram_agent.py" if saved_world == 1 else \
            f"torchrun with --nproc_per_node (x --nnodes) = {saved_world}"
        raise ConfigError(flag_message("--resume", f"{run_dir}: the run was trained by {saved_world} process(es), "
                                                   f"this job has {dist.world_size}; each process's random streams "
                                                   f"are in last.pt, so continue it with the same number: {how} ... "
                                                   f"--resume {run_dir}"))
    if config.epochs < state["epoch"]:
        raise ConfigError(flag_message("--epochs", f"{config.epochs}: {run_dir} has already trained {state['epoch']} "
                                                   f"epochs"))
    return payload


def rng_states(device: torch.device, order_generator: torch.Generator, env_generator: torch.Generator) -> dict:
    """Every random stream a run draws from, so that a resumed run goes on exactly where it stopped."""
    states = {"torch_rng": torch.get_rng_state(), "order_rng": order_generator.get_state(),
              "env_rng": env_generator.get_state()}
    if device.type == "cuda":  # sampled locations draw from the device's global generator
        states["cuda_rng"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(states: dict, device: torch.device, order_generator: torch.Generator,
                       env_generator: torch.Generator) -> None:
    """Set what :func:`rng_states` saved. torch takes a generator's state only as a CPU ByteTensor, whatever the
    generator's device (and a checkpoint read onto CUDA holds its tensors there)."""
    torch.set_rng_state(states["torch_rng"].cpu())
    order_generator.set_state(states["order_rng"].cpu())
    env_state = states["env_rng"].cpu()
    if env_state.numel() == env_generator.get_state().numel():
        env_generator.set_state(env_state)
    else:  # resumed on another kind of device: CPU and CUDA generators keep different states
        print("the run was saved on another kind of device; the env's random stream starts again from the seed")
    if device.type == "cuda" and "cuda_rng" in states:
        torch.cuda.set_rng_state(states["cuda_rng"].cpu(), device)
