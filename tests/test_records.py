"""The shipped records as the README reports them: seeds (agents.training.records), and the results table's
figures, each checked against the record that computed it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from agents.training import records
from agents.training.config import ADDED_LATER
from agents.training.presets import PRESETS, RECIPES, REFERENCE_ERRORS, SHIPPED_RECORDS, record_keys

REPO = Path(__file__).resolve().parents[1]


def write_record(folder: Path, seed: int, error: float, mc_error: float = 0.005) -> None:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"seed": seed}))
    (folder / "results.json").write_text(json.dumps({"test": {"error": error, "mc_error": mc_error}}))


def test_seed_results_read_the_shipped_run_and_the_seed_folders(tmp_path, monkeypatch):
    monkeypatch.setitem(SHIPPED_RECORDS, "mnist28-3g", "runs/shipped")
    write_record(tmp_path / "runs/shipped", 0, 0.0115)
    write_record(tmp_path / records.SEED_FOLDER / "mnist28-3g-seed1", 1, 0.0101)
    write_record(tmp_path / records.SEED_FOLDER / "mnist28-3g-seed2", 2, 0.0130)
    (tmp_path / records.SEED_FOLDER / "mnist28-3g-seed3").mkdir()  # started, unfinished: not counted
    write_record(tmp_path / records.SEED_FOLDER / "mnist28-3g-seedless", 9, 0.5)  # not a seed folder
    results = records.seed_results("mnist28-3g", tmp_path)
    assert [(r.seed, r.error) for r in results] == [(0, 0.0115), (1, 0.0101), (2, 0.0130)]
    s = records.summary(results)
    assert s["seeds"] == [0, 1, 2] and s["mean"] == pytest.approx(1.1533, abs=1e-4)
    assert (s["min"], s["max"]) == pytest.approx((1.01, 1.30))
    assert "| `mnist28-3g` | 0, 1, 2 | 1.15, 1.01, 1.30 | 1.15 (1.01-1.30), 3 seeds |" in records.markdown(
        ["mnist28-3g"], tmp_path)
    assert records.seeds_cell(results[:1]) == "—"


def test_a_recipes_seed_record_is_its_last_stage_and_a_wrong_seed_is_refused(tmp_path, monkeypatch):
    last = f"translated60-6g/stage{len(RECIPES['translated60-6g'])}"
    monkeypatch.setitem(SHIPPED_RECORDS, last, "runs/shipped")
    write_record(tmp_path / "runs/shipped", 0, 0.0109)
    seed1 = tmp_path / records.SEED_FOLDER / "translated60-6g-seed1"
    write_record(seed1 / "stage1", 1, 0.0200)
    write_record(seed1 / "stage2", 1, 0.0100)
    assert [(r.seed, r.error) for r in records.seed_results("translated60-6g", tmp_path)] == [(0, 0.0109), (1, 0.01)]
    write_record(tmp_path / records.SEED_FOLDER / "translated60-6g-seed2", 0, 0.0100)
    with pytest.raises(ValueError, match="seed 0, the folder seed 2"):
        records.seed_results("translated60-6g", tmp_path)


def test_a_record_tested_on_a_test_subset_is_refused(tmp_path, monkeypatch):
    """A --test-subset run's figure is not the test split's: it must never reach the README's seeds cell."""
    monkeypatch.setitem(SHIPPED_RECORDS, "mnist28-3g", "runs/shipped")
    write_record(tmp_path / "runs/shipped", 0, 0.0115)
    seed1 = tmp_path / records.SEED_FOLDER / "mnist28-3g-seed1"
    write_record(seed1, 1, 0.0101)
    full = {"test": {"error": 0.0101}, "test_images": 10_000}
    (seed1 / "results.json").write_text(json.dumps(full))
    assert [r.seed for r in records.seed_results("mnist28-3g", tmp_path)] == [0, 1]
    (seed1 / "results.json").write_text(json.dumps({**full, "test_images": 500}))
    with pytest.raises(ValueError, match="tested on 500 images \\(--test-subset\\)"):
        records.seed_results("mnist28-3g", tmp_path)


def seed_folders() -> list[Path]:
    return sorted(p for p in (REPO / records.SEED_FOLDER).glob("*-seed*") if p.is_dir())


@pytest.mark.parametrize("folder", seed_folders(), ids=lambda p: p.name)
def test_a_seed_record_is_its_rows_command_with_another_seed(folder):
    """Every extra seed ran the shipped row's configuration, the seed (and where it ran) aside; a recipe's stage by
    stage. Its checkpoint ships beside the others', in assets/checkpoints/seeds/."""
    row, seed = re.fullmatch(r"(.+)-seed(\d+)", folder.name).groups()
    assert row in PRESETS and int(seed) > 0
    keys = record_keys(row)
    stages = [folder / f"stage{i}" for i in range(1, len(keys) + 1)] if row in RECIPES else [folder]
    where = {"seed", "run_dir", "data_dir", "device", "eval_slots", "init_from", "figure", "preset"}
    for key, stage in zip(keys, stages, strict=True):
        shipped = {**ADDED_LATER, **json.loads((REPO / SHIPPED_RECORDS[key] / "config.json").read_text())}
        ours = {**ADDED_LATER, **json.loads((stage / "config.json").read_text())}
        assert ours["seed"] == int(seed), stage
        assert {k: v for k, v in ours.items() if k not in where} == \
            {k: v for k, v in shipped.items() if k not in where}, stage
        assert (stage / "commit.txt").is_file() or row in RECIPES and (folder / "commit.txt").is_file(), stage
    assert (REPO / "assets/checkpoints/seeds" / f"{folder.name}.pt").is_file()


def readme_results_rows() -> dict[str, list[str]]:
    """The README results table's cells, by row name (the preset in backquotes in the first cell)."""
    text = (REPO / "README.md").read_text()
    table = text.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[1:2] != ["paper"] and (m := re.search(r"\(`([\w-]+)`\)", cells[0])):
            rows[m.group(1)] = cells
    return rows


def test_every_preset_has_a_readme_results_row():
    assert set(readme_results_rows()) == set(PRESETS) == set(REFERENCE_ERRORS)


@pytest.mark.parametrize("row", sorted(PRESETS))
def test_the_readme_shows_each_rows_paper_figure_and_target(row):
    cells = readme_results_rows()[row]
    assert re.fullmatch(rf"{REFERENCE_ERRORS[row]['paper']:.2f}( \(TF\))?", cells[1]), (row, cells[1])
    assert cells[2] == f"<= {REFERENCE_ERRORS[row]['target']}", (row, cells[2])


@pytest.mark.parametrize("row", sorted(PRESETS))
def test_the_readme_results_row_is_its_shipped_record(row):
    """The deterministic and MC figures of a shipped row are those its record's run computed (results.json), the
    seeds column those of records.seed_results; a row without a shipped record shows none."""
    cells = readme_results_rows()[row]
    shipped = records.shipped_record(row)
    if shipped is None:
        assert cells[3] == "—" and cells[4] == "—", row
        return
    test = json.loads((REPO / shipped / "results.json").read_text())["test"]
    assert re.match(rf"\**{100 * test['error']:.2f}\b", cells[3]), (row, cells[3])
    assert cells[4] == f"{100 * test['mc_error']:.2f}", (row, cells[4])
    assert cells[5] == records.seeds_cell(records.seed_results(row)), (row, cells[5])
