"""The stable-baselines3 baseline script: a tiny end-to-end run of each algorithm on the committed digits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import agents.training
import agents.training.sb3_baseline as sb3_baseline
from glimpse_env.data import DigitSet


@pytest.mark.parametrize("algo", ["recurrent-ppo", "ppo"])
def test_tiny_run_writes_config_model_and_results(algo: str, tiny_digits: DigitSet, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    results = sb3_baseline.main(
        ["--algo", algo, "--preset", "mnist28-6g", "--n-glimpses", "3", "--timesteps", "256", "--n-envs", "2",
         "--n-steps", "64", "--batch-size", "64", "--n-epochs", "2", "--lstm-hidden-size", "32",
         "--eval-images", "20", "--eval-envs", "8", "--run-dir", str(run_dir)],
        digits=tiny_digits,
    )
    assert {"config.json", "model.zip", "results.json", "command.txt"} <= {p.name for p in run_dir.iterdir()}
    config = json.loads((run_dir / "config.json").read_text())
    assert config["algo"] == algo and config["n_glimpses"] == 3 and config["size"] == 28  # flag over preset
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved == results
    error = saved["test"]["error"]
    assert isinstance(error, float) and 0.0 <= error <= 1.0 and not math.isnan(error)
    assert saved["test"]["num_images"] == 20
    assert saved["env_steps_trained"] >= 256 and saved["env_steps_per_episode"] == 3
    assert saved["episodes_equivalent"] == saved["env_steps_trained"] / 3
    assert "episodes_equivalent" in capsys.readouterr().out


def test_presets_come_from_the_ram_trainer() -> None:
    assert sb3_baseline.PRESETS is agents.training.PRESETS
    config = sb3_baseline.resolve_config(sb3_baseline.build_parser().parse_args(["--preset", "translated60-4g"]))
    assert (config.size, config.scales, config.glimpse_size, config.n_glimpses) == (60, 3, 12, 4)
    for preset in agents.training.PRESETS:  # every row, also those that set RAM-only options (reinforce_core)
        args = sb3_baseline.build_parser().parse_args(["--preset", preset])
        assert sb3_baseline.resolve_config(args).preset == preset


@pytest.mark.parametrize("flags, message", [
    (["--timesteps", "0"], "argument --timesteps: must be an integer >= 1, got 0"),
    (["--threads", "-1"], "argument --threads: must be an integer >= 0, got -1"),
    (["--seed", str(2**32)], r"argument --seed: must be an integer in \[0, 2\*\*32 - 1\]"),  # numpy's legacy seed
    (["--first-location", "corner"], "argument --first-location: invalid choice"),  # GlimpseConfig's choices
])
def test_a_bad_flag_is_refused_before_the_run_folder_is_made(tmp_path: Path, refused, flags: list[str],
                                                             message: str) -> None:
    refused(sb3_baseline.main, [*flags, "--run-dir", str(tmp_path / "run")], message)
    assert not (tmp_path / "run").exists()
