"""Training on more than one process (issue 10): torchrun and DistributedDataParallel, on the CPU with Gloo.

Two ranks stay identical step by step, the gradient DDP applies is the single process's gradient of the whole batch,
the deterministic evaluation split over ranks counts exactly what one process counts (for an agent that learned its
first glimpse: with the env's random first glimpse, each rank draws it from its own stream, so the split changes
it), the final test uses best.pt's location noise, a rank that dies takes the job down and the run resumes to the
weights of an uninterrupted one, and a resume with another number of processes is refused. Workers are spawned with
torch.multiprocessing (or torchrun, for the kill); each uses one thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import TINY_FLAGS, TINY_TEST_IMAGES

from agents import RAMConfig, RecurrentAttentionModel, evaluate, load_agent
from agents.training import cli, evaluation, step
from agents.training.config import ConfigError, TrainConfig
from agents.training.distributed import Distributed, init_distributed
from agents.training.evaluation import summed_errors
from agents.training.presets import PRESETS
from agents.training.run_folder import read_last_checkpoint
from agents.training.trainer import train
from glimpse_env.data import DigitSet
from glimpse_env.vector_env import GlimpseMNISTVectorEnv

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "fixtures" / "mnist_test_300.npz"
# 32 steps an epoch of 32 images (16 a rank), validation on 200 images, the test on 500, no Monte-Carlo.
TINY = [*TINY_FLAGS, "--train-subset", "1024", "--threads", "1"]
TIMINGS = {"epoch_seconds", "train_episodes_per_second", "wall_seconds"}
WORLD = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_rank(rank: int, port: int) -> None:
    """Make this spawned process rank ``rank`` of a 2-process job, as torchrun would (one thread each)."""
    os.environ.update(WORLD_SIZE=str(WORLD), RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)


def spawn(worker, *args) -> None:
    mp.spawn(worker, args=(free_port(), *args), nprocs=WORLD, join=True)


def fixture_digits() -> DigitSet:
    with np.load(FIXTURE) as data:
        return DigitSet(torch.from_numpy(data["images"].astype(np.uint8)),
                        torch.from_numpy(data["labels"].astype(np.int64)))


def metrics(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_agent(a).model.state_dict(), load_agent(b).model.state_dict()
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ---------------------------------------------------------------- the trainer, 2 ranks


def train_worker(rank: int, port: int, argv: list[str], out: Path) -> None:
    """The trainer's command line as rank ``rank``, recording a hash of the weights after every optimizer step."""
    as_rank(rank, port)
    hashes = []
    real_step = torch.optim.lr_scheduler.LambdaLR.step

    def step(self, *args, **kwargs):  # the scheduler steps once per training step, after the optimizer
        real_step(self, *args, **kwargs)
        flat = torch.cat([p.detach().reshape(-1) for g in self.optimizer.param_groups for p in g["params"]])
        hashes.append(hashlib.sha256(flat.numpy().tobytes()).hexdigest())

    torch.optim.lr_scheduler.LambdaLR.step = step
    with (out / f"stdout{rank}.txt").open("w") as stdout, contextlib.redirect_stdout(stdout):
        cli.main(argv)
    (out / f"hashes{rank}.json").write_text(json.dumps(hashes))


def train_two_ranks(out: Path, *flags: str) -> list[list[str]]:
    """Train with 2 spawned ranks into ``out / "run"``; each rank's weight hashes, step by step."""
    out.mkdir(parents=True, exist_ok=True)
    spawn(train_worker, [*TINY, "--run-dir", str(out / "run"), *flags], out)
    return [json.loads((out / f"hashes{rank}.json").read_text()) for rank in range(WORLD)]


@pytest.fixture(scope="module")
def straight(mnist_dir, tmp_path_factory) -> tuple[Path, list[list[str]]]:
    """An uninterrupted 2-rank run of 2 epochs (its folder and its ranks' weight hashes)."""
    out = tmp_path_factory.mktemp("straight")
    hashes = train_two_ranks(out, "--epochs", "2")
    return out, hashes


@pytest.mark.slow
def test_two_ranks_have_the_same_weights_after_every_step(straight):
    out, (rank0, rank1) = straight
    assert len(rank0) == 1 + 2 * 32  # the weights at the start, then after each of the 2 x 32 steps
    assert rank0 == rank1
    assert len(set(rank0)) == len(rank0)  # and they did change at every step
    assert [row["epoch"] for row in metrics(out / "run")] == [1, 2]
    results = json.loads((out / "run" / "results.json").read_text())
    assert results["world_size"] == 2 and results["test"]["num_images"] == results["test_images"] == TINY_TEST_IMAGES
    # Rank 0 reports; the other rank prints nothing.
    assert "epoch   2" in (out / "stdout0.txt").read_text() and (out / "stdout1.txt").read_text() == ""
    assert (out / "run" / "command.txt").read_text().startswith("torchrun --nnodes=1 --nproc_per_node=2 ")


def test_two_ranks_stay_identical_with_separate_clipping(mnist_dir, tmp_path):
    rank0, rank1 = train_two_ranks(tmp_path, "--epochs", "1", "--train-subset", "256", "--clip-separately",
                                   "--grad-clip", "0.5", "--reinforce-core")
    assert rank0 == rank1 and len(set(rank0)) == len(rank0) == 1 + 8
    # The fast suite's 2-rank job: the test split over the ranks counts all its images once (the ranks' sums).
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["world_size"] == 2 and results["test"]["num_images"] == results["test_images"] == TINY_TEST_IMAGES


def best_noise_worker(rank: int, port: int, argv: list[str], out: Path) -> None:
    """A 2-epoch run whose validation is scripted so that epoch 1 is the best (its location noise 0.3, the last
    epoch's 0.05); records the noise of the model the final test is played with."""
    as_rank(rank, port)
    tested = []
    real_test = evaluation.distributed_test

    def distributed_test(model, *args, **kwargs):
        tested.append(model.config.loc_std)
        return real_test(model, *args, **kwargs)

    # Scripted validation, lower for more noise: epoch 1 (0.3) is the best, epoch 2 (0.05) worse.
    evaluation.validate = lambda model, *args, **kwargs: {"error": 1.0 / model.config.loc_std}
    evaluation.distributed_test = distributed_test
    with (out / f"stdout{rank}.txt").open("w") as stdout, contextlib.redirect_stdout(stdout):
        cli.main(argv)
    (out / f"tested{rank}.json").write_text(json.dumps(tested))


@pytest.mark.slow
def test_the_final_test_plays_best_pts_location_noise(mnist_dir, tmp_path):
    """Issue 18, fault 2: the test split over ranks kept the last epoch's loc_std instead of best.pt's."""
    spawn(best_noise_worker, [*TINY, "--train-subset", "64", "--epochs", "2", "--loc-std", "0.3", "--loc-std-final",
                              "0.05", "--run-dir", str(tmp_path / "run")], tmp_path)
    best = load_agent(tmp_path / "run" / "best.pt")
    assert best.extra["metrics"]["epoch"] == 1 and best.model.config.loc_std == pytest.approx(0.3)
    for rank in range(WORLD):
        assert json.loads((tmp_path / f"tested{rank}.json").read_text()) == [pytest.approx(0.3)]


# ---------------------------------------------------------------- the gradient of a sharded batch

IMAGES, M = 32, 2
GRADIENT_CASES = {  # name: the flags that matter for one step
    "3 glimpses": dict(n_glimpses=3),
    "3 glimpses, clip separately": dict(n_glimpses=3, clip_separately=True),
    "1 glimpse": dict(n_glimpses=1),
    "1 glimpse, clip separately, reinforce core": dict(n_glimpses=1, clip_separately=True, reinforce_core=True),
}


def episode_gradients(config: TrainConfig, digits: DigitSet,
                      dist: Distributed) -> dict[str, torch.Tensor]:
    """The gradient (after clipping) of the trainer's step for one fixed batch of IMAGES x M episodes, this rank's
    share of it played here. Everything random is fixed per slot of the whole batch: canvases (the test split's,
    one per image) and the location noise (a table, by slot and glimpse), so any split plays the same episodes."""
    torch.manual_seed(0)
    env = GlimpseMNISTVectorEnv(IMAGES * M // dist.world_size, split="test", digits=digits,
                                n_glimpses=config.n_glimpses)
    model = RecurrentAttentionModel(RAMConfig.from_spaces(env.single_observation_space, env.single_action_space,
                                                          **config.model_kwargs()))
    noise = torch.randn(config.n_glimpses + 1, IMAGES * M, 2, generator=torch.Generator().manual_seed(1))
    first_slot, calls = dist.rank * env.num_envs, []

    def sample_location(mean: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        table = noise[len(calls) % len(noise), first_slot:first_slot + len(mean)]
        calls.append(1)
        location = (mean.detach() + model.config.loc_std * table).clamp(-1.0, 1.0)
        return location, model.location_log_prob(mean, location)

    model.sample_location = sample_location
    images = dist.shard(torch.arange(IMAGES))
    options = {"indices": images.repeat_interleave(M), "slots_per_canvas": M}
    module = step.wrap_for_ddp(step.EpisodeLoss(model, env, config.rl_weight), config, dist, torch.device("cpu"))
    params = list(model.parameters())
    grads = {}
    for repeat in range(2):  # a second step: DDP fails there if a parameter went without its gradient
        model.zero_grad(set_to_none=True)
        loss, _ = module(options)
        step.backward_and_clip(loss, params, config, dist)
        if repeat == 0:
            grads = {name: torch.zeros_like(p) if p.grad is None else p.grad.clone()
                     for name, p in model.named_parameters()}
    return grads


def gradient_config(**flags) -> TrainConfig:
    return TrainConfig(**{**PRESETS["mnist28-6g"], "grad_clip": 1.0, **flags})


def unit_worker(rank: int, port: int, out: Path) -> None:
    """As rank ``rank``: the gradients of GRADIENT_CASES and this rank's part of an evaluation (one process start
    for both tests: starting one is most of their time)."""
    as_rank(rank, port)
    dist = init_distributed(1.0, threads=1)
    digits = fixture_digits()
    grads = {name: episode_gradients(gradient_config(**flags), digits, dist)
             for name, flags in GRADIENT_CASES.items()}
    torch.save(grads, out / f"grads{rank}.pt")
    model = load_agent(CHECKPOINT).model
    images = dist.shard(torch.arange(EVAL_IMAGES))
    env = evaluation_env(digits, min(EVAL_SLOTS, len(images)))
    result = summed_errors(evaluate(model, env, indices=images, counts=True), dist)
    (out / f"eval{rank}.json").write_text(json.dumps(result))
    dist.close()


@pytest.fixture(scope="module")
def units(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("units")
    spawn(unit_worker, out)
    return out


@pytest.mark.slow
def test_the_ddp_gradient_of_a_split_batch_is_the_whole_batchs(units):
    ranks = [torch.load(units / f"grads{rank}.pt") for rank in range(WORLD)]
    digits = fixture_digits()
    for name, flags in GRADIENT_CASES.items():
        single = episode_gradients(gradient_config(**flags), digits, Distributed())
        for rank in ranks:
            assert rank[name].keys() == single.keys()
            for param in single:
                assert torch.equal(rank[name][param], ranks[0][name][param]), (name, param)  # every rank alike
                torch.testing.assert_close(rank[name][param], single[param], rtol=1e-4, atol=1e-6,
                                           msg=lambda text, n=name, p=param: f"{n}, {p}: {text}")
        # The learned first glimpse is outside the per-glimpse forward: its gradient must be averaged too.
        for param in ("first_location_logit", "first_baseline"):
            assert single[param].abs().sum() > 0, (name, param)


# ---------------------------------------------------------------- evaluation split over ranks

CHECKPOINT = REPO / "assets" / "checkpoints" / "mnist28-2g.pt"
EVAL_IMAGES, EVAL_SLOTS = 299, 64  # uneven shards (150 and 149), several padded batches a rank


def evaluation_env(digits: DigitSet, num_envs: int) -> GlimpseMNISTVectorEnv:
    env = GlimpseMNISTVectorEnv(num_envs, split="test", digits=digits, **load_agent(CHECKPOINT).env_kwargs)
    env.reset(seed=0)
    return env


@pytest.mark.slow
def test_evaluation_split_over_two_ranks_counts_what_one_process_counts(units):
    """Exact only for an agent that picks its first glimpse (nothing in a deterministic episode is then random):
    with the env's random first glimpse the ranks draw it from streams of their own."""
    assert load_agent(CHECKPOINT).model.config.learn_first_location
    single = evaluate(load_agent(CHECKPOINT).model, evaluation_env(fixture_digits(), EVAL_SLOTS), EVAL_IMAGES)
    assert 0 < single["error"] < 0.2  # a trained agent: few wrong, so a lost or double-counted image shows
    for rank in range(WORLD):
        split = json.loads((units / f"eval{rank}.json").read_text())
        assert split == {"error": single["error"], "wrong": round(single["error"] * EVAL_IMAGES),
                         "num_images": EVAL_IMAGES}


# ---------------------------------------------------------------- a rank dies; resume


def torchrun(log, *flags: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
               "train/ram_agent.py", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


@pytest.mark.slow
def test_a_rank_killed_mid_epoch_stops_the_job_and_the_run_resumes_to_the_same_weights(straight, tmp_path):
    reference = straight[0] / "run"
    folder = tmp_path / "run"
    log = (tmp_path / "log.txt").open("w")
    job = torchrun(log, *TINY, "--epochs", "2", "--run-dir", str(folder))
    try:
        while not (folder / "metrics.jsonl").is_file() or not (folder / "metrics.jsonl").read_text():
            assert job.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
            time.sleep(0.002)
        workers = children(job.pid)
        assert len(workers) == WORLD
        os.kill(workers[-1], signal.SIGKILL)  # in epoch 2: one rank dies
        assert job.wait(timeout=120) != 0  # the others are stopped: the job ends, with an error
    finally:
        if job.poll() is None:
            job.kill()
            for pid in children(job.pid):
                os.kill(pid, signal.SIGKILL)
    assert [row["epoch"] for row in metrics(folder)] == [1]  # epoch 2 was not committed
    assert torchrun(log, "--resume", str(folder)).wait(timeout=600) == 0, \
        (tmp_path / "log.txt").read_text()[-3000:]
    assert "resuming" in (tmp_path / "log.txt").read_text()
    assert metrics(folder) == metrics(reference)
    assert same_weights(folder / "last.pt", reference / "last.pt")
    assert same_weights(folder / "best.pt", reference / "best.pt")
    tests = [json.loads((run / "results.json").read_text())["test"] for run in (folder, reference)]
    assert tests[0]["error"] == tests[1]["error"]


@pytest.mark.slow
def test_a_resume_with_another_number_of_processes_is_refused(straight, tmp_path, refused):
    folder = tmp_path / "two"
    shutil.copytree(straight[0] / "run", folder)
    refused(cli.main, ["--resume", str(folder), "--epochs", "3"],
            r"trained by 2 process\(es\), this job has 1.*same number: torchrun with "
            r"--nproc_per_node \(x --nnodes\) = 2")
    one = tmp_path / "one"  # and the other way round: a one-process run asked to go on with 2
    cli.main([*TINY, "--train-subset", "64", "--epochs", "1", "--run-dir", str(one)])
    config = TrainConfig(**json.loads((one / "config.json").read_text()))
    with pytest.raises(ConfigError, match=r"trained by 1 process\(es\), this job has 2.*python train/ram_agent.py"):
        read_last_checkpoint(one, config, torch.device("cpu"), Distributed(world_size=2))


def test_a_batch_that_does_not_split_evenly_is_refused(tmp_path):
    config = TrainConfig(batch_size=33, run_dir=str(tmp_path / "run"))
    with pytest.raises(ConfigError, match="argument --batch-size: 33 does not split evenly over the 2 processes"):
        train(config, [], dist=Distributed(world_size=2))
    assert not (tmp_path / "run").exists()
