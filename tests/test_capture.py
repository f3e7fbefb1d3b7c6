"""The trainer's step made capture-safe (issue 30): no host sync and no Python branch on a tensor, so that one CUDA
graph can hold it. On the CPU: the rollout and loss trace whole (dynamo, fullgraph), a non-finite step is skipped on
the device with the weights, AdamW's state and the average exactly as before, the schedule's tensor learning rate is
LambdaLR's, and the env still refuses a user's bad action. On CUDA (skipped without one): a graphed run's metrics
against an eager run's, the step free of host syncs (torch's sync debug mode), and the fallback when a capture fails.

Backward and AdamW are not traced here: torch's optimizer step holds a graph break of its own (``_use_grad``) when
compiled on the CPU; the CUDA tests cover them (capturable AdamW, clipping without error_if_nonfinite). The model
samples its locations from a Gaussian written out (no torch.distributions, so no argument validation to turn off)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from agents import RAMConfig, RecurrentAttentionModel, hybrid_loss, run_episodes
from agents.training import cli, step
from agents.training.config import TrainConfig
from agents.training.cuda_graph import GraphedStep
from agents.training.distributed import Distributed
from agents.training.step import (
    DeviceStep,
    EpisodeLoss,
    learning_rate_factor,
    learning_rate_scheduler,
    load_optimizer_state,
    optimizer_state,
)
from glimpse_env import cpu_kernels
from glimpse_env.vector_env import GlimpseMNISTVectorEnv

SMALL = dict(what_hidden=16, where_hidden=16, glimpse_out=32, core_size=32)
TASKS = {"28x28": dict(size=28, n_glimpses=3), "cluttered": dict(size=40, scales=2, n_glimpses=2, clutter=2)}


def tiny(digits, task: str = "28x28", slots: int = 8, **model) -> tuple[GlimpseMNISTVectorEnv, RecurrentAttentionModel]:
    env = GlimpseMNISTVectorEnv(num_envs=slots, digits=digits, **TASKS[task])
    env.reset(seed=0)
    torch.manual_seed(0)
    config = RAMConfig.from_spaces(env.single_observation_space, env.single_action_space, learn_first_location=True,
                                   **{**SMALL, **model})
    return env, RecurrentAttentionModel(config)


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")  # traced through: fine here
def test_the_trainers_rollout_and_loss_trace_whole(tiny_digits, task):
    """The torch path CUDA runs (no CPU kernels): reset, every glimpse and the loss in one graph, no break."""
    env, model = tiny(tiny_digits, task)
    indices = torch.arange(env.num_envs) * 7

    def rollout_loss(indices: torch.Tensor) -> torch.Tensor:
        return hybrid_loss(run_episodes(model, env, {"indices": indices}, trusted=True)).total

    with cpu_kernels.disabled():
        explained = torch._dynamo.explain(rollout_loss)(indices)
        assert explained.graph_break_count == 0, explained.break_reasons
        loss = torch.compile(rollout_loss, fullgraph=True, backend="eager")(indices)  # refuses syncs and branches
    assert loss.shape == () and math.isfinite(float(loss.detach()))


def test_the_trusted_rollout_is_the_checked_one(tiny_digits):
    """Same random streams, same episodes: trusting the trainer's tensors changes nothing but the checks."""
    results = []
    for trusted in (False, True):
        env, model = tiny(tiny_digits, "cluttered")
        torch.manual_seed(1)
        results.append(run_episodes(model, env, {"indices": torch.arange(8)}, trusted=trusted))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_a_users_bad_action_is_still_refused(tiny_digits):
    env, _ = tiny(tiny_digits)
    nan = {"location": torch.full((8, 2), float("nan")), "prediction": torch.zeros(8, 10)}
    with pytest.raises(ValueError, match="must be finite"):
        env.step(nan)
    with pytest.raises(ValueError, match=r"must lie in \[0, 299\]"):
        env.reset(options={"indices": torch.full((8,), 300)})
    with pytest.raises(ValueError, match="check must be True or False"):
        env.step(nan, check=1)
    with pytest.raises(ValueError, match=r"options\['check'\] must be True or False"):
        env.reset(options={"check": "no"})
    env.step(nan, check=False)  # the trainer's own: unchecked, no host sync


def device_step(digits, ema_decay: float = 0.9) -> DeviceStep:
    env, model = tiny(digits)
    config = TrainConfig(n_glimpses=3, batch_size=4, mc_samples=2, ema_decay=ema_decay, max_nonfinite_steps=3,
                         **SMALL)
    optimizer = step.make_optimizer(list(model.parameters()), config, torch.device("cpu"))
    average = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(ema_decay))
    module = EpisodeLoss(model, env, config.rl_weight, trusted=True)
    runner = DeviceStep(module, model, optimizer, average, config, Distributed(), torch.device("cpu"), None)
    runner.host_decides = False  # the path CUDA takes, decided on the device
    return runner


def snapshot(runner: DeviceStep) -> dict:
    return {key: tensor.clone() for key, tensor in runner.guarded().items()}


def test_a_nonfinite_step_is_skipped_on_the_device(tiny_digits, monkeypatch):
    """A NaN in the third of five steps: it leaves weights, AdamW's moments and step count and the average (with its
    count) exactly as they were; the steps after it train; the counts and sums say so."""
    runner = device_step(tiny_digits)
    calls, good = [], []
    real = step.hybrid_loss

    def hybrid_loss_with_a_nan(*args, **kwargs):
        loss = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            return loss._replace(total=loss.total * torch.tensor(float("nan")))
        good.append(loss.total.detach())
        return loss

    monkeypatch.setattr(step, "hybrid_loss", hybrid_loss_with_a_nan)
    runner.start_epoch()
    images = torch.arange(4)
    for number in range(1, 6):
        before = snapshot(runner)
        runner(images + 4 * number)
        after = snapshot(runner)
        changed = [key for key in after if key not in before or not torch.equal(before[key], after[key])]
        if number == 3:
            assert before.keys() == after.keys() and not changed
        else:
            assert {key[0] for key in changed} >= {"weight", "adam", "average"}
    state = runner.optimizer.state[runner.params[0]]
    assert float(state["step"]) == 4 and int(runner.average.n_averaged) == 4
    assert int(runner.nonfinite) == 1 and int(runner.bad_in_a_row) == 0 and int(runner.limit_step) == -1
    assert torch.equal(runner.totals[0], sum(good[1:], good[0]))


def test_a_skipped_first_step_leaves_adam_as_it_starts(tiny_digits, monkeypatch):
    """Skipped before AdamW has any state: its state is zeros (how AdamW starts it), the weights untouched."""
    runner = device_step(tiny_digits)
    weights = [p.detach().clone() for p in runner.params]
    monkeypatch.setattr(step, "hybrid_loss", lambda *a, **k: (lambda loss: loss._replace(
        total=loss.total + float("inf")))(hybrid_loss(*a, **k)))
    runner.start_epoch()
    for _ in range(3):
        runner(torch.arange(4))
    assert all(torch.equal(a, b) for a, b in zip(weights, runner.params, strict=True))
    assert all(float(s["step"]) == 0 and not s["exp_avg"].any() for s in runner.optimizer.state.values())
    assert int(runner.average.n_averaged) == 0
    assert (int(runner.nonfinite), int(runner.bad_in_a_row), int(runner.limit_step)) == (3, 3, 2)


def test_the_written_learning_rate_is_the_schedules(tmp_path):
    """A tensor learning rate (CUDA's capturable AdamW) follows learning_rate_factor as LambdaLR's float does, and
    its checkpoint is an eager run's."""
    config = TrainConfig(epochs=3, warmup_epochs=0.5, lr=2e-3, lr_final=1e-5)
    weight = torch.nn.Parameter(torch.zeros(3))
    tensor_lr = torch.optim.AdamW([weight], lr=torch.tensor(config.lr))
    plain = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(3))], lr=config.lr)
    schedules = [learning_rate_scheduler(opt, config, 7) for opt in (tensor_lr, plain)]
    for number in range(21):
        expected = config.lr * learning_rate_factor(config, number, 7)
        assert plain.param_groups[0]["lr"] == expected
        assert tensor_lr.param_groups[0]["lr"].item() == torch.tensor(expected).item()
        assert schedules[0].get_last_lr() == schedules[1].get_last_lr()
        for optimizer in (tensor_lr, plain):
            optimizer.param_groups[0]["params"][0].grad = torch.ones(3)
            optimizer.step()
        for schedule in schedules:
            schedule.step()
    assert schedules[0].state_dict() == schedules[1].state_dict()
    saved = optimizer_state(tensor_lr)
    assert isinstance(saved["param_groups"][0]["lr"], float)
    lr = tensor_lr.param_groups[0]["lr"]
    load_optimizer_state(tensor_lr, saved)
    assert tensor_lr.param_groups[0]["lr"] is lr


def test_the_cpu_runs_eagerly_and_says_so(mnist_dir, tmp_path):
    flags = ["--train-subset", "64", "--batch-size", "32", "--mc-samples", "2", "--n-glimpses", "2", "--eval-slots",
             "2500", "--val-subset", "100", "--test-mc", "0", "--no-figure", "--precision", "fp32", "--device", "cpu",
             "--epochs", "1", "--run-dir", str(tmp_path / "run")]
    results = cli.main(flags)
    assert results["cuda_graph"] == "off (eager on the CPU)"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["cuda_graph"] == "on"  # recorded like any flag
    assert GraphedStep(None, "off", torch.device("cuda"), Distributed()).status == "off"


# ---------------------------------------------------------------- CUDA

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
CUDA_RUN = ["--train-subset", "1024", "--batch-size", "64", "--mc-samples", "2", "--n-glimpses", "3", "--eval-slots",
            "1000", "--val-subset", "500", "--test-mc", "0", "--no-figure", "--precision", "fp32", "--device", "cuda",
            "--epochs", "2", "--seed", "1"]


def metrics(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@needs_cuda
def test_cuda_step_has_no_host_sync(tiny_digits):
    """torch's sync debug mode raises on any host sync: the step CUDA runs (skip decided on the device) has none."""
    device = torch.device("cuda")
    env = GlimpseMNISTVectorEnv(num_envs=8, digits=tiny_digits, device=device, **TASKS["cluttered"])
    env.reset(seed=0)
    model = RecurrentAttentionModel(RAMConfig.from_spaces(env.single_observation_space, env.single_action_space,
                                                          learn_first_location=True, **SMALL)).to(device)
    config = TrainConfig(**TASKS["cluttered"], batch_size=4, mc_samples=2, ema_decay=0.9, **SMALL)
    optimizer = step.make_optimizer(list(model.parameters()), config, device)
    average = torch.optim.swa_utils.AveragedModel(model)
    runner = DeviceStep(EpisodeLoss(model, env, config.rl_weight, trusted=True), model, optimizer, average, config,
                        Distributed(), device, None)
    assert not runner.host_decides
    runner.start_epoch()
    images = torch.arange(4, device=device)
    runner(images)  # AdamW's state is made here
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            runner(images)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert int(runner.nonfinite) == 0 and float(optimizer.state[runner.params[0]]["step"]) == 3


@needs_cuda
def test_cuda_graph_run_matches_the_eager_run(mnist_dir, tmp_path):
    graphed = cli.main([*CUDA_RUN, "--run-dir", str(tmp_path / "graph")])
    eager = cli.main([*CUDA_RUN, "--cuda-graph", "off", "--run-dir", str(tmp_path / "eager")])
    assert graphed["cuda_graph"] == "on" and eager["cuda_graph"] == "off"
    for a, b in zip(metrics(tmp_path / "graph"), metrics(tmp_path / "eager"), strict=True):
        assert a["nonfinite_steps"] == b["nonfinite_steps"] == 0
        for key in ("loss", "cross_entropy", "reward"):
            assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-4), key
        assert a["lr"] == b["lr"]
        assert a["val_error"] == pytest.approx(b["val_error"], abs=0.02)


@needs_cuda
def test_cuda_capture_that_fails_falls_back_to_eager_saying_why(mnist_dir, tmp_path, monkeypatch, capsys):
    def refuse(self, images, noise):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(GraphedStep, "capture", refuse)
    results = cli.main([*CUDA_RUN, "--epochs", "1", "--run-dir", str(tmp_path / "run")])
    printed = capsys.readouterr().out
    assert printed.count("CUDA graph: the capture failed (RuntimeError: operation not permitted") == 1
    assert results["cuda_graph"].startswith("off (capture failed: RuntimeError")
    assert metrics(tmp_path / "run")[0]["nonfinite_steps"] == 0
