"""The RAM agent: gradient flow of the hybrid loss, the location policy, rollouts, checkpoints, learning."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch

import glimpse_env  # noqa: F401
from agents import RAMConfig, RecurrentAttentionModel, hybrid_loss, load_agent, run_episodes, save_agent
from agents.checkpoint import read_checkpoint

PRESET_GEOMETRY = [  # (size, scales, glimpse_size, n_glimpses, clutter) of every row of the paper's table
    (28, 1, 8, 2, 0),
    (28, 1, 8, 4, 0),
    (28, 1, 8, 6, 0),
    (28, 1, 8, 7, 0),
    (60, 3, 12, 4, 0),
    (60, 3, 12, 6, 0),
    (60, 3, 12, 8, 0),
    (60, 3, 12, 8, 4),
    (100, 4, 12, 8, 8),
]


def make_env(digits, num_envs=8, **kwargs):
    return gym.make_vec("GlimpseMNIST-v0", num_envs=num_envs, digits=digits, **kwargs)


def make_model(env, **overrides) -> RecurrentAttentionModel:
    torch.manual_seed(0)
    return RecurrentAttentionModel(
        RAMConfig.from_spaces(env.single_observation_space, env.single_action_space, **overrides)
    )


def grads_of(model: RecurrentAttentionModel, loss: torch.Tensor) -> dict[str, bool]:
    """Which top-level parts of the model ``loss`` puts a non-zero gradient on."""
    model.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    parts = {}
    for name, parameter in model.named_parameters():
        part = name.split(".")[0]
        moved = parameter.grad is not None and bool(parameter.grad.abs().sum() > 0)
        parts[part] = parts.get(part, False) or moved
    return parts


@pytest.mark.parametrize("core", ["rnn", "lstm"])
def test_each_loss_term_reaches_only_its_own_parts(tiny_digits, core):
    env = make_env(tiny_digits, size=60, scales=3, glimpse_size=12, n_glimpses=4)
    model = make_model(env, core=core)
    episodes = run_episodes(model, env)
    episodes = episodes._replace(reward=torch.rand(8))  # a non-trivial advantage for every slot
    loss = hybrid_loss(episodes, rl_weight=1.0)

    learned_by_ce = {"glimpse_net": True, "core": True, "classifier": True}
    assert grads_of(model, loss.cross_entropy) == {
        **learned_by_ce,
        "location_head": False,
        "baseline_head": False,
    }
    assert grads_of(model, loss.reinforce) == {
        "glimpse_net": False,
        "core": False,
        "classifier": False,
        "location_head": True,
        "baseline_head": False,
    }
    assert grads_of(model, loss.baseline) == {
        "glimpse_net": False,
        "core": False,
        "classifier": False,
        "location_head": False,
        "baseline_head": True,
    }


def test_reinforce_core_lets_reinforce_train_the_core_and_glimpse_network(tiny_digits):
    env = make_env(tiny_digits, size=60, scales=3, glimpse_size=12, n_glimpses=4)
    model = make_model(env, reinforce_core=True, learn_first_location=True)
    episodes = run_episodes(model, env)
    episodes = episodes._replace(reward=torch.rand(8))
    loss = hybrid_loss(episodes, rl_weight=1.0)
    assert grads_of(model, loss.reinforce) == {
        "glimpse_net": True,
        "core": True,
        "classifier": False,
        "location_head": True,
        "baseline_head": False,
        "first_location_logit": True,
        "first_baseline": False,
    }
    # The baseline still learns only from its own loss, and cross-entropy still leaves the policy alone.
    assert grads_of(model, loss.baseline)["core"] is False
    assert grads_of(model, loss.cross_entropy)["location_head"] is False


def test_locations_fed_back_carry_no_graph(tiny_digits):
    env = make_env(tiny_digits)
    model = make_model(env)
    observation, _ = env.reset(seed=0)
    state = model.initial_state(8)
    out = model(observation, state)
    location, log_prob = model.sample_location(out.location_mean)
    assert not location.requires_grad and log_prob.requires_grad
    observation, *_ = env.step({"location": location, "prediction": out.logits.detach()})
    assert not observation["location"].requires_grad
    episodes = run_episodes(model, env)
    assert not episodes.locations.requires_grad


def test_one_log_prob_per_location_looked_at(tiny_digits):
    env = make_env(tiny_digits, n_glimpses=6)
    episodes = run_episodes(make_model(env), env)
    # 6 glimpses: the first at the env's random location, 5 chosen by the agent; the location sent with the
    # grading step is never looked at and has no log-probability.
    assert episodes.log_probs.shape == (5, 8)
    assert episodes.baselines.shape == (5, 8)
    assert episodes.locations.shape == (6, 8, 2)
    one = make_env(tiny_digits, n_glimpses=1)
    single = run_episodes(make_model(one), one)
    assert single.log_probs.shape == (0, 8)
    assert hybrid_loss(single).reinforce.item() == 0.0


def test_learned_first_location(tiny_digits):
    env = make_env(tiny_digits, n_glimpses=3)
    model = make_model(env, learn_first_location=True)
    with torch.no_grad():
        model.first_location_logit.copy_(torch.tensor([0.5, -0.3]))
    first = torch.tanh(torch.tensor([0.5, -0.3]))
    deterministic = run_episodes(model, env, deterministic=True)
    assert torch.allclose(deterministic.locations[0], first.expand(8, 2))  # every episode starts where it learned
    assert torch.equal(model.reset_options(8, deterministic=True)["location"], deterministic.locations[0])
    assert make_model(env).reset_options(8) == {}  # an agent that does not choose leaves it to the env

    episodes = run_episodes(model, env)  # sampled: all 3 glimpses were chosen, so 3 log-probabilities
    assert episodes.log_probs.shape == (3, 8) and episodes.baselines.shape == (3, 8)
    assert not torch.allclose(episodes.locations[0], first.expand(8, 2))
    loss = hybrid_loss(episodes._replace(reward=torch.rand(8)))
    assert grads_of(model, loss.reinforce) == {
        "glimpse_net": False, "core": False, "classifier": False, "location_head": True, "baseline_head": False,
        "first_location_logit": True, "first_baseline": False,
    }
    assert grads_of(model, loss.baseline)["first_baseline"] and not grads_of(model, loss.cross_entropy)[
        "first_location_logit"]
    # the non-learning baselines ignore it: the env puts the first glimpse
    center = make_env(tiny_digits, n_glimpses=3, first_location="center")
    assert torch.equal(run_episodes(model, center, locations="center").locations[0], torch.zeros(8, 2))


def test_censored_gaussian_log_prob_matches_sampling():
    model = RecurrentAttentionModel(RAMConfig(loc_std=0.3))
    mean = torch.tensor([[0.9, -0.2]]).expand(200_000, 2)
    torch.manual_seed(0)
    location, log_prob = model.sample_location(mean)
    at_border = location[:, 0] == 1.0
    # The clipped location 1.0 has the probability of every sample beyond it.
    expected = 1 - 0.5 * (1 + math.erf((1.0 - 0.9) / (0.3 * math.sqrt(2))))
    assert at_border.float().mean().item() == pytest.approx(expected, abs=0.005)
    border_lp = model.location_log_prob(mean[:1], torch.tensor([[1.0, -0.2]]))
    interior = torch.distributions.Normal(torch.tensor(-0.2), 0.3).log_prob(torch.tensor(-0.2))
    assert border_lp.item() == pytest.approx(math.log(expected) + interior.item(), rel=1e-4)
    assert torch.isfinite(log_prob).all()


@pytest.mark.parametrize("geometry", PRESET_GEOMETRY, ids=lambda g: "x".join(map(str, g)))
@pytest.mark.parametrize("core", ["rnn", "lstm"])
def test_shapes_for_every_paper_preset(tiny_digits, geometry, core):
    size, scales, glimpse_size, n_glimpses, clutter = geometry
    env = make_env(
        tiny_digits,
        num_envs=4,
        size=size,
        scales=scales,
        glimpse_size=glimpse_size,
        n_glimpses=n_glimpses,
        clutter=clutter,
    )
    model = make_model(env, core=core)
    observation, _ = env.reset(seed=1)
    action, state = model.act(observation, model.initial_state(4))
    assert action["location"].shape == (4, 2) and action["prediction"].shape == (4, 10)
    assert env.single_action_space["location"].contains(action["location"][0].numpy())
    deterministic, _ = model.act(observation, model.initial_state(4), deterministic=True)
    again, _ = model.act(observation, model.initial_state(4), deterministic=True)
    assert torch.equal(deterministic["location"], again["location"])
    episodes = run_episodes(model, env)
    assert episodes.logits.shape == (4, 10) and episodes.log_probs.shape == (n_glimpses - 1, 4)


def test_checkpoint_round_trip_and_refusals(tiny_digits, tmp_path):
    env = make_env(tiny_digits)
    model = make_model(env, core="lstm", core_size=64)
    env_kwargs = dict(size=28, scales=1, glimpse_size=8, n_glimpses=6, clutter=0)
    save_agent(tmp_path / "agent.pt", model, env_kwargs, {"note": "x"})
    loaded = load_agent(tmp_path / "agent.pt")
    assert loaded.env_kwargs == env_kwargs and loaded.extra == {"note": "x"}
    assert loaded.model.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.model.state_dict()[key])

    chooser = make_model(env, learn_first_location=True)
    save_agent(tmp_path / "chooser.pt", chooser, env_kwargs)
    assert torch.equal(load_agent(tmp_path / "chooser.pt").model.first_location_logit, chooser.first_location_logit)

    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_agent(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="damaged or not a torch checkpoint"):
        load_agent(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not a glimpse-mnist RAM checkpoint"):
        read_checkpoint(tmp_path / "foreign.pt")


def test_interrupted_save_leaves_the_previous_checkpoint(tiny_digits, tmp_path, monkeypatch):
    env = make_env(tiny_digits)
    model = make_model(env)
    path = tmp_path / "agent.pt"
    save_agent(path, model, {"size": 28})
    before = path.read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if the run were stopped in the middle of writing

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save_agent(path, model, {"size": 60})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["agent.pt"]  # no temporary file left behind


def test_short_training_learns_well_above_chance(tiny_digits):
    """A few hundred gradient steps on 300 digits: far above the 10% of guessing."""
    env = make_env(tiny_digits, num_envs=200, n_glimpses=4)
    model = make_model(env, core_size=128, glimpse_out=128)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    env.reset(seed=0)
    for _ in range(150):
        indices = torch.randint(0, len(tiny_digits), (40,), generator=generator).repeat_interleave(5)
        loss = hybrid_loss(run_episodes(model, env, {"indices": indices}))
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    with torch.no_grad():
        episodes = run_episodes(model, env, {"indices": torch.arange(200)}, deterministic=True)
    accuracy = (episodes.logits.argmax(1) == episodes.labels).float().mean().item()
    assert accuracy > 0.5  # chance is 0.1


@pytest.mark.parametrize("locations", ["random", "center"])
def test_non_learning_baselines_look_where_they_say(tiny_digits, locations):
    env = make_env(tiny_digits, first_location="center" if locations == "center" else "random")
    with torch.no_grad():
        episodes = run_episodes(make_model(env), env, locations=locations)
    chosen = episodes.locations[1:]  # the first location is the env's
    if locations == "center":
        assert torch.equal(episodes.locations, torch.zeros_like(episodes.locations))
    else:
        assert chosen.abs().max() <= 1.0 and chosen.std() > 0.3  # uniform on [-1, 1] has std 0.58
    assert episodes.log_probs.shape == (0, 8)
    with pytest.raises(ValueError, match="locations must be one of"):
        run_episodes(make_model(env), env, locations="corner")
