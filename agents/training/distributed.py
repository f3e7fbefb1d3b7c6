"""Training on N processes under torchrun: where this process stands, and the few collectives the trainer uses.

One code path for 1 process or many. torchrun sets WORLD_SIZE, RANK, LOCAL_RANK and LOCAL_WORLD_SIZE; without it
(or with one process) there is no process group and nothing here does anything: a single process trains as it
always did. Rank 0 alone touches the run folder; what it reads there is broadcast, so the other ranks need no
shared file system.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as torch_dist

from agents.training.config import ConfigError

T = TypeVar("T")


@dataclass
class Distributed:
    """Where this process stands in a torchrun job. Not a hyperparameter: one run may use 1 process or 64."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0  # picks this process's GPU
    local_world_size: int = 1  # processes on this machine: they share its cores
    backend: str = ""  # "gloo", or "cpu:gloo,cuda:nccl" when each rank has a GPU; "" without a process group

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def from_rank0(self, work: Callable[[], T]) -> T:
        """``work()`` on rank 0 (file work: once), its result sent to every rank. A refusal there (ConfigError,
        SystemExit) or an error stops every rank with its message, rather than leaving the others waiting."""
        if not self.active:
            return work()
        box: list[Any] = [None]
        failure: BaseException | None = None
        if self.main:
            try:
                box = [("ok", work())]
            except ConfigError as error:
                box, failure = [("config", str(error))], error
            except SystemExit as stop:
                box, failure = [("exit", stop.code)], stop
            except Exception as error:
                box, failure = [("exit", f"rank 0 failed: {type(error).__name__}: {error}")], error
        torch_dist.broadcast_object_list(box, src=0)
        if failure is not None:
            raise failure
        kind, value = box[0]
        if kind == "config":
            raise ConfigError(value)
        if kind == "exit":
            raise SystemExit(value)
        return value

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks (in place; the tensor itself for one process)."""
        if self.active:
            torch_dist.all_reduce(tensor)
        return tensor

    def all_true(self, flag: torch.Tensor) -> bool:
        """Whether ``flag`` (a bool tensor) holds on every rank: they then take or skip a step together."""
        if not self.active:
            return bool(flag)
        value = flag.to(torch.int32).reshape(1)
        torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MIN)
        return bool(value)

    def all_true_on_device(self, flag: torch.Tensor) -> torch.Tensor:
        """:meth:`all_true` left on the device (a bool tensor), never read by the host: a CUDA graph can hold it."""
        if not self.active:
            return flag
        value = flag.to(torch.int32).reshape(1)
        torch_dist.all_reduce(value, op=torch_dist.ReduceOp.MIN)
        return value.reshape(()).bool()

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.active:
            return [value]
        values: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(values, value)
        return values

    def broadcast_weights(self, module: torch.nn.Module) -> None:
        """Every rank takes rank 0's weights."""
        if self.active:
            for tensor in module.state_dict().values():
                torch_dist.broadcast(tensor, src=0)

    def shard(self, items: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of ``items`` (the parts differ by at most one in length)."""
        return items.tensor_split(self.world_size)[self.rank] if self.active else items

    def close(self) -> None:
        if torch_dist.is_available() and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def launcher_environment() -> dict[str, str] | None:
    """The environment the process that started this one was itself started with (torchrun's, for a rank), or
    None where it cannot be read (not Linux)."""
    try:
        entries = Path(f"/proc/{os.getppid()}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return dict(entry.decode(errors="replace").split("=", 1) for entry in entries if b"=" in entry)


def rank_threads(local_world_size: int, threads: int | None) -> int | None:
    """The intra-op threads of one of ``local_world_size`` ranks on a machine, or None to leave torch's choice.

    ``threads`` (the trainer's --threads) decides when given. Else a user's OMP_NUM_THREADS stands; torchrun sets
    OMP_NUM_THREADS=1 itself when it is unset, leaving the cores of a CPU machine idle: that one is recognised (the
    environment torchrun was started with lacks it, or cannot be read and the value is torchrun's 1) and replaced
    by the machine's cores shared among its ranks."""
    if threads is not None:
        return threads
    value = os.environ.get("OMP_NUM_THREADS")
    if value is not None:
        launcher = launcher_environment()
        users = "OMP_NUM_THREADS" in launcher if launcher is not None else value.strip() != "1"
        if users:
            return None
    return max(1, available_cores() // local_world_size)


def init_distributed(timeout_minutes: float, threads: int | None = None) -> Distributed:
    """Join the torchrun job this process was started in (a one-process Distributed() when there is none), and set
    this process's threads (``threads``, else see :func:`rank_threads`)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        if threads is not None:
            torch.set_num_threads(threads)
        return Distributed()
    if not timeout_minutes > 0:
        raise ConfigError(f"argument --dist-timeout-minutes: must be a finite number > 0, got {timeout_minutes}")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    chosen = rank_threads(local_world_size, threads)
    if chosen is not None:
        torch.set_num_threads(chosen)
    if torch.cuda.is_available() and torch.cuda.device_count() >= local_world_size:
        torch.cuda.set_device(local_rank)
        # A failed NCCL collective (a rank died) raises instead of hanging; the timeout bounds the wait for it.
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
        backend = "cpu:gloo,cuda:nccl"  # CUDA tensors over NCCL; objects (configs, checkpoints) over Gloo
    else:
        backend = "gloo"
    # With a timeout, a collective that a dead rank never joins fails (and torchrun stops the job) instead of
    # waiting forever.
    torch_dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes))
    return Distributed(world_size, rank, local_rank, local_world_size, backend)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's own random streams (env and location noise): rank 0 keeps the run's seed, so a single
    process is seeded as it always was; the others get streams of their own, derived from the seed and the rank."""
    if rank == 0:
        return seed
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0])
