"""The presets and recipes as data: every row pins its precision (issue 18, fault 5), and every preset or recipe
stage that made a shipped checkpoint is pinned to that run's record, assets/runs/*/config.json (issue 17). The
pinned bf16 is what a CPU with bf16 instructions (or CUDA) trains in; where bf16 would only be emulated, a run asks
for it by --precision bf16 and gets fp32 otherwise (both tested here, whatever this machine's CPU).

A record is compared on every field that decides the result: not where it ran (run_dir, data_dir, device), what
it drew (figure), how fast it evaluated (eval_slots), when it would have given up on NaNs (max_nonfinite_steps),
the preset's name (a label; stage 1 of translated60-6g is the 4-glimpse run) or the path it started from
(init_from: checked to be set exactly for a later stage). Records written before a field existed lack it; they
trained with its ADDED_LATER value. Records predate the precision pin and say "auto": their results.json says what
auto chose, and that is what is compared.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch

from agents.pretrained import CHECKPOINT_DIR, is_agent_name
from agents.training import cli, precision
from agents.training.config import ADDED_LATER, TrainConfig, resolve_config
from agents.training.presets import PRESETS, RECIPES, SHIPPED_RECORDS, record_keys, stage_values
from glimpse_env.files import file_sha256

REPO = Path(__file__).resolve().parents[1]
NOT_DECIDING = {"preset", "run_dir", "data_dir", "device", "figure", "eval_slots", "max_nonfinite_steps", "init_from",
               "cuda_graph"}
# What a record says auto chose (results.json "precision", in either form it has been written in) as the flag.
CHOSEN = precision.RECORDED_PRECISIONS
# Shipped records that disagree with the row as it stands: (field, row's value, record's value). Each is a known
# difference (the lead is told); a new one, or one that goes away, fails the test.
# None today: every shipped record ran its row's command as it stands.
KNOWN_DIFFERENCES: dict[str, set[tuple]] = {}


@pytest.fixture(autouse=True)
def fast_bf16(monkeypatch):
    """A machine with bf16 instructions, as every shipped row trained on (a test that wants the other kind says so)."""
    monkeypatch.setattr(precision, "has_fast_bf16", lambda device: True)


def resolved(key: str, *flags: str) -> TrainConfig:
    """The configuration the trainer resolves for a preset or a recipe's stage (as --recipe does), with ``flags``."""
    if "/" not in key:
        return resolve_config(cli.build_parser().parse_args(["--preset", key, *flags]))
    recipe, stage = key.split("/stage")
    args = cli.build_parser().parse_args(["--recipe", recipe, *flags])
    explicit = cli.explicit_flags(args, TrainConfig)
    return cli.recipe_stage(args, explicit, Path("runs") / f"{recipe}-recipe", int(stage))[0]


def record(folder: str) -> dict:
    config = {**ADDED_LATER, **json.loads((REPO / folder / "config.json").read_text())}
    if config["precision"] == "auto":
        config["precision"] = CHOSEN[json.loads((REPO / folder / "results.json").read_text())["precision"]]
    return config


def test_every_preset_and_recipe_stage_pins_bf16():
    """A row trains the same on every CPU: precision is pinned, not left to auto (which picks fp32 on CPUs without
    bf16 instructions), in every preset and every stage of every recipe as --recipe resolves it."""
    for name in PRESETS:
        assert resolved(name).precision == "bf16", name
    for recipe, stages in RECIPES.items():
        for number in range(1, len(stages) + 1):
            assert resolved(f"{recipe}/stage{number}").precision == "bf16", (recipe, number)


def every_row_and_stage() -> list[str]:
    return [*PRESETS, *(f"{recipe}/stage{n}" for recipe, stages in RECIPES.items() for n in range(1, len(stages) + 1))]


def test_where_bf16_would_be_emulated_a_row_trains_fp32_unless_bf16_is_asked_for(monkeypatch):
    """On a CPU without AMX or AVX-512 BF16 a bf16 training step ran 14-18x slower than fp32: the pinned bf16
    becomes fp32 there (the run says so), and --precision bf16 or fp32 given on the command line stands."""
    monkeypatch.setattr(precision, "has_fast_bf16", lambda device: False)
    for key in every_row_and_stage():
        assert resolved(key).precision == "fp32", key
        assert resolved(key, "--precision", "bf16").precision == "bf16", key
    assert resolved("mnist28-6g", "--precision", "auto").precision == "auto"
    assert resolve_config(cli.build_parser().parse_args([])).precision == "fp32"  # the quick start


def test_a_resumed_run_keeps_the_precision_it_started_in(monkeypatch, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(vars(resolved("mnist28-6g"))))
    monkeypatch.setattr(precision, "has_fast_bf16", lambda device: False)
    assert resolve_config(cli.build_parser().parse_args(["--resume", str(tmp_path)])).precision == "bf16"


def test_a_run_says_when_its_precision_is_not_the_fast_one_here(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "has_fast_bf16", lambda device: False)
    assert "emulated" in precision.precision_note("bf16", "bf16", cpu)
    assert "--precision bf16 trains as the record did" in precision.precision_note("fp32", "bf16", cpu)
    assert precision.precision_note("fp32", None, cpu) is None
    assert precision.precision_note("auto", "bf16", cpu) is None
    monkeypatch.setattr(precision, "has_fast_bf16", lambda device: True)
    assert precision.precision_note("bf16", "bf16", cpu) is None
    assert precision.precision_note("fp32", "bf16", cpu) is None


def test_every_recipe_stage_resolves_to_a_valid_configuration():
    for recipe, stages in RECIPES.items():
        for number in range(1, len(stages) + 1):
            values = stage_values(recipe, number)
            assert set(values) <= set(TrainConfig.__dataclass_fields__), (recipe, number)
            TrainConfig(**values)


def test_every_shipped_record_names_a_row():
    for key in SHIPPED_RECORDS:
        name, _, stage = key.partition("/stage")
        assert name in (RECIPES if stage else PRESETS), key
        assert not stage or 1 <= int(stage) <= len(RECIPES[name]), key


@pytest.mark.parametrize("key", sorted(SHIPPED_RECORDS))
def test_a_shipped_row_is_pinned_to_its_run_record(key):
    config, saved = vars(resolved(key)), record(SHIPPED_RECORDS[key])
    differences = {(name, value, saved.get(name)) for name, value in config.items()
                   if name not in NOT_DECIDING and saved.get(name) != value}
    assert differences == KNOWN_DIFFERENCES.get(key, set()), f"{key} vs {SHIPPED_RECORDS[key]}"
    if "/stage" in key:  # a later stage starts from the previous stage's best.pt, wherever the recipe ran
        assert bool(saved["init_from"]) == (not key.endswith("/stage1")), key
    else:  # a row's preset names its input, a shipped agent, exactly
        assert saved["init_from"] == config["init_from"], key


def test_the_record_mapping_is_read_as_the_recipe_command_resolves_it():
    args = argparse.Namespace(**{**vars(cli.build_parser().parse_args(["--recipe", "cluttered60-8g"]))})
    config, started = cli.recipe_stage(args, {}, Path("runs/x"), 2)
    assert not started and config.init_from == str(Path("runs/x/stage1/best.pt"))


@pytest.mark.parametrize("key", sorted(k for k in SHIPPED_RECORDS if "/stage" not in k))
def test_a_row_that_starts_from_a_shipped_agent_started_from_the_one_shipped_now(key):
    """A row trained from another row's shipped agent (cluttered60-4g from translated60-4g) is the output of its
    command only while that agent is the file it started from: its record's init_from.json holds that file's
    SHA-256. Retraining the input row without retraining this one fails here."""
    folder = REPO / SHIPPED_RECORDS[key]
    name = record(SHIPPED_RECORDS[key])["init_from"]
    if not (name and is_agent_name(name)):
        assert not (folder / "init_from.json").exists(), key
        return
    kept = json.loads((folder / "init_from.json").read_text())
    assert kept["init_from"] == name, key
    assert kept["sha256"] == file_sha256(CHECKPOINT_DIR / f"{name}.pt"), f"{key}: {name} was retrained since"


@pytest.mark.parametrize("row", sorted(PRESETS))
def test_a_shipped_row_ran_on_one_recorded_commit(row):
    """Every record of a row's shipped checkpoint (each stage of a recipe) names the commit it ran on, one commit for
    all of them, so `git worktree add DIR COMMIT` and the record's command repeat it."""
    commit_files = [REPO / SHIPPED_RECORDS[key] / "commit.txt" for key in record_keys(row)]
    commits = {path.read_text().strip() for path in commit_files}
    assert len(commits) == 1 and all(re.fullmatch(r"[0-9a-f]{40}", c) for c in commits), (row, commits)
