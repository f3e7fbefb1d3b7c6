"""Direct tests of three rules that every other test let through when broken (issue 18's "soft spots"):
Monte-Carlo evaluation averages class probabilities, not logits; the REINFORCE term pushes the policy towards a
rewarded location (its sign); and the trainer keeps as best.pt the epoch of the LOWEST validation error."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import TINY_FLAGS

from agents import Episodes, RAMConfig, RecurrentAttentionModel, evaluate, hybrid_loss
from agents.checkpoint import read_checkpoint
from agents.training import cli, evaluation

NUM_CLASSES = 10


class ScriptedEnv:
    """Just what ``evaluate`` reads from an env: its slots and its device (episodes are scripted below)."""

    num_envs = 3
    device = torch.device("cpu")


def scripted_logits(rows: list[list[float]]) -> torch.Tensor:
    logits = torch.full((len(rows), NUM_CLASSES), -1e4)
    logits[:, :2] = torch.tensor(rows)
    return logits


def test_monte_carlo_evaluation_averages_probabilities_not_logits(monkeypatch):
    """Three sampled paths of one digit (label 0): two say 0 with certainty (logits 0 against -100), one says 1
    with a huge margin (-1000 against 0). Probabilities average to 2/3 for class 0: right. Logits (or log-
    probabilities) average to -333 against -67: class 1, wrong. The deterministic path says 1: wrong."""
    def run_episodes(model, env, options=None, deterministic=False, generator=None, locations="policy"):
        slots = len(options["indices"])
        rows = [[-1000.0, 0.0]] * slots if deterministic else [[0.0, -100.0], [0.0, -100.0], [-1000.0, 0.0]]
        logits = scripted_logits(rows[:slots])
        empty = torch.zeros(0, slots)
        return Episodes(logits, empty, empty, torch.zeros(slots), torch.zeros(slots, dtype=torch.long),
                        torch.zeros(1, slots, 2))

    # Patched where evaluate looks it up, wherever evaluate lives.
    monkeypatch.setattr(sys.modules[evaluate.__module__], "run_episodes", run_episodes)
    result = evaluate(torch.nn.Linear(1, 1), ScriptedEnv(), num_images=1, mc_samples=3)
    assert result["error"] == 1.0  # the deterministic path alone is wrong
    assert result["mc_error"] == 0.0, "Monte-Carlo evaluation must average probabilities (softmax), not logits"


def episodes_with(log_probs: torch.Tensor, baselines: torch.Tensor, reward: torch.Tensor) -> Episodes:
    batch = reward.shape[0]
    logits = torch.zeros(batch, NUM_CLASSES, requires_grad=True)
    return Episodes(logits, log_probs, baselines, reward, torch.zeros(batch, dtype=torch.long),
                    torch.zeros(log_probs.shape[0] + 1, batch, 2))


@pytest.mark.parametrize("rl_weight", [1.0, 0.5])
def test_reinforce_gradient_raises_the_log_probability_of_better_than_baseline_paths(rl_weight):
    """d total / d log pi(l_t) = -rl_weight * (R - b_t) / B: gradient descent makes a path whose return beat its
    baseline more likely and one that fell short less likely; the advantage is constant (detached), so the
    baseline gets the MSE's gradient only."""
    log_probs = torch.tensor([[-1.0, -2.0], [-0.5, -0.7]], requires_grad=True)  # T=2 locations x B=2 episodes
    baselines = torch.tensor([[0.25, 0.5], [0.75, 0.5]], requires_grad=True)
    reward = torch.tensor([1.0, 0.0])
    loss = hybrid_loss(episodes_with(log_probs, baselines, reward), rl_weight)
    loss.total.backward()
    advantage = reward[None] - baselines.detach()
    torch.testing.assert_close(log_probs.grad, -rl_weight * advantage / 2)
    assert (log_probs.grad[:, 0] < 0).all() and (log_probs.grad[:, 1] > 0).all()
    torch.testing.assert_close(baselines.grad, 2 * (baselines.detach() - reward[None]) / baselines.numel())
    assert loss.reinforce.item() == pytest.approx(-(log_probs.detach() * advantage).sum(0).mean().item())


@pytest.mark.parametrize("reward, towards", [(1.0, True), (0.0, False)])
def test_a_rewarded_location_pulls_the_policy_mean_towards_it(reward, towards):
    """Through the model's own log-probability: one SGD step on the hybrid loss moves the location mean towards a
    sampled location whose return beat the baseline (0.5), and away from one whose return fell short."""
    model = RecurrentAttentionModel(RAMConfig(loc_std=0.1))
    mean = torch.tensor([[0.0, 0.0]], requires_grad=True)
    location = torch.tensor([[0.05, -0.08]])  # inside [-1, 1]: the Gaussian part of the censored density
    log_prob = model.location_log_prob(mean, location)
    loss = hybrid_loss(episodes_with(log_prob[None], torch.full((1, 1), 0.5), torch.tensor([reward])))
    loss.total.backward()
    moved = mean.detach() - 0.01 * mean.grad  # one gradient-descent step
    closer = (moved - location).norm() < (mean.detach() - location).norm()
    assert bool(closer) == towards


# ---------------------------------------------------------------- best.pt: the lowest validation error

SCRIPTED = [0.5, 0.2, 0.4, 0.2]  # epoch 2 is the lowest; epoch 4 ties it and must not replace it


@pytest.mark.parametrize("monte_carlo", [False, True], ids=["deterministic", "monte-carlo"])
def test_best_checkpoint_is_the_epoch_of_the_lowest_validation_error(mnist_dir, tmp_path, monkeypatch,
                                                                   monte_carlo):
    """Validation is scripted (0.5, 0.2, 0.4, 0.2): best.pt must hold epoch 2, the first of the lowest; with
    --val-mc the Monte-Carlo error selects (the deterministic one is then the same every epoch)."""
    calls = []

    def validate(*args, **kwargs):
        value = SCRIPTED[len(calls)]
        calls.append(value)
        return {"error": 0.3, "mc_error": value} if monte_carlo else {"error": value}

    monkeypatch.setattr(evaluation, "validate", validate)
    folder = tmp_path / "run"
    results = cli.main([*TINY_FLAGS, "--train-subset", "64", "--epochs", "4", "--run-dir", str(folder),
                              *(["--val-mc", "2"] if monte_carlo else [])])
    best = read_checkpoint(folder / "best.pt")["extra"]
    last = read_checkpoint(folder / "last.pt")["extra"]
    assert best["metrics"]["epoch"] == 2 and last["state"]["best_epoch"] == 2
    assert results["best_val_error"] == last["state"]["best_val_error"] == 0.2
