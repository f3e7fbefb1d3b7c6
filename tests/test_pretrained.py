"""Shipped agents by name (agents.pretrained): ``load_agent("cluttered60-8g")``, the play window and the figures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agents import RAMConfig, RecurrentAttentionModel, load_agent, save_agent
from agents.pretrained import CHECKPOINT_DIR, is_agent_name, pretrained_names, pretrained_path, resolve_checkpoint
from glimpse_env.play import build_loop, parse_args

SHIPPED = sorted(path.stem for path in CHECKPOINT_DIR.glob("*.pt"))
needs_shipped = pytest.mark.skipif(not SHIPPED, reason="the repository's assets/checkpoints/*.pt are not here")


def test_the_known_names_are_the_top_level_checkpoints():
    assert CHECKPOINT_DIR == Path(__file__).resolve().parents[1] / "assets" / "checkpoints"
    assert pretrained_names() == SHIPPED
    assert all("/" not in name and not name.endswith(".pt") for name in SHIPPED)


@needs_shipped
def test_a_name_loads_the_shipped_checkpoint():
    name = "cluttered60-8g" if "cluttered60-8g" in SHIPPED else SHIPPED[0]
    by_name, by_path = load_agent(name), load_agent(CHECKPOINT_DIR / f"{name}.pt")
    assert by_name.env_kwargs == by_path.env_kwargs and by_name.model.config == by_path.model.config
    for key, value in by_path.model.state_dict().items():
        assert torch.equal(value, by_name.model.state_dict()[key])
    assert pretrained_path(name) == CHECKPOINT_DIR / f"{name}.pt"


@needs_shipped
def test_the_play_window_takes_a_name(tiny_digits):
    name = "mnist28-6g" if "mnist28-6g" in SHIPPED else SHIPPED[0]
    loop = build_loop(parse_args(["--agent", name, "--seed", "0"]), digits=tiny_digits)
    assert loop.agent is not None and loop.config.size == load_agent(name).env_kwargs["size"]


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="known names") as raised:
        load_agent("cluttered60-9g")
    assert all(name in str(raised.value) for name in SHIPPED)


def test_without_the_checkpoints_the_error_says_so(tmp_path):
    with pytest.raises(ValueError, match="no shipped agents are installed.*assets/checkpoints"):
        pretrained_path("cluttered60-8g", folder=tmp_path / "absent")
    with pytest.raises(ValueError, match="no shipped agents"):
        resolve_checkpoint("mnist28-6g", folder=tmp_path)  # a folder without .pt files


def test_an_existing_path_wins_and_paths_are_left_to_the_reader(tmp_path, monkeypatch):
    config = RAMConfig(scales=1, glimpse_size=8, what_hidden=8, where_hidden=8, glimpse_out=16, core_size=16)
    monkeypatch.chdir(tmp_path)
    save_agent(tmp_path / "mnist28-6g", RecurrentAttentionModel(config), dict(size=28, n_glimpses=2))
    assert resolve_checkpoint("mnist28-6g") == "mnist28-6g"  # a file of that name here: that file
    assert load_agent("mnist28-6g").env_kwargs == dict(size=28, n_glimpses=2)
    for path in ("missing.pt", "runs/x", Path("cluttered60-8g")):  # paths (or a Path): not names
        assert resolve_checkpoint(path) == path
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_agent("missing.pt")
    assert is_agent_name("cluttered60-8g") and not is_agent_name("a/b") and not is_agent_name("x.pt")
    assert not is_agent_name("") and not is_agent_name("..")



@pytest.mark.skipif("translated60-4g" not in SHIPPED, reason="the shipped translated60-4g agent is not here")
def test_init_from_takes_a_shipped_agents_name():
    """A preset may start from another row's shipped agent by name (translated60-8g from translated60-4g)."""
    from agents.training.config import ConfigError, TrainConfig
    from agents.training.presets import PRESETS
    from agents.training.trainer import load_init_weights

    config = TrainConfig(**{**PRESETS["translated60-8g"], "preset": "translated60-8g"})
    assert config.init_from == "translated60-4g"
    model = RecurrentAttentionModel(config.model_config())
    load_init_weights(model, config, torch.device("cpu"))
    shipped = load_agent(CHECKPOINT_DIR / "translated60-4g.pt").model.state_dict()
    assert all(torch.equal(value, model.state_dict()[key]) for key, value in shipped.items())
    with pytest.raises(ConfigError, match="argument --init-from: no-such-agent.*known names"):
        load_init_weights(model, TrainConfig(**{**PRESETS["translated60-8g"], "init_from": "no-such-agent"}),
                          torch.device("cpu"))
