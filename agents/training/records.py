"""What the shipped run records say: each row's test figures, and over its seeds their mean and range.

A row's shipped record is the run that made ``assets/checkpoints/<row>.pt`` (``SHIPPED_RECORDS``: the row's own run,
or its recipe's last stage); it is seed 0. The records of the same command with other seeds (``--seed 1``, ...)
live in ``assets/runs/seeds/<row>-seed<N>/`` (a recipe's: its stage folders, the last one holding the result), their
checkpoints in ``assets/checkpoints/seeds/``. Each test figure was computed once, by its run; nothing here evaluates.

    python -m agents.training.records          # the README's seed columns, as a markdown table
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from agents.training.presets import PRESETS, SHIPPED_RECORDS, record_keys

REPO = Path(__file__).resolve().parents[2]
SEED_FOLDER = Path("assets/runs/seeds")


@dataclass(frozen=True)
class SeedResult:
    """One finished run of a row's command: its seed, its record folder and the test errors it reported."""

    seed: int
    folder: Path
    error: float
    mc_error: float | None


def shipped_record(row: str) -> Path | None:
    """The record folder (relative to the repository) of the run that made ``row``'s shipped checkpoint, or None."""
    last = record_keys(row)[-1]
    return Path(SHIPPED_RECORDS[last]) if last in SHIPPED_RECORDS else None


def finished_result(folder: Path) -> Path | None:
    """The results.json that holds a record's outcome: its own, or (a recipe's record) its last stage's."""
    if (folder / "results.json").is_file():
        return folder / "results.json"
    stages = sorted((int(m.group(1)), path) for path in folder.glob("stage*")
                    if (m := re.fullmatch(r"stage(\d+)", path.name)) and (path / "results.json").is_file())
    return stages[-1][1] / "results.json" if stages else None


def seed_results(row: str, root: Path = REPO) -> list[SeedResult]:
    """Every finished run of ``row``'s command with a record here, by seed: the shipped one (seed 0) and those in
    ``assets/runs/seeds/``. A record whose config names another seed than its folder, or that was tested on a
    --test-subset, is an error."""
    folders: dict[int, Path] = {}
    shipped = shipped_record(row)
    if shipped is not None:
        folders[0] = shipped
    for path in sorted((root / SEED_FOLDER).glob(f"{row}-seed*")):
        if m := re.fullmatch(re.escape(row) + r"-seed(\d+)", path.name):
            folders[int(m.group(1))] = path.relative_to(root)
    results = []
    for seed, folder in sorted(folders.items()):
        result_path = finished_result(root / folder)
        if result_path is None:
            continue
        config = json.loads((result_path.parent / "config.json").read_text())
        if config["seed"] != seed:
            raise ValueError(f"{folder}: config.json says seed {config['seed']}, the folder seed {seed}")
        saved = json.loads(result_path.read_text())
        if saved.get("test_images", 10_000) != 10_000:  # --test-subset: not the split's figure
            raise ValueError(f"{folder}: tested on {saved['test_images']} images (--test-subset), not the test "
                             f"split's 10,000")
        test = saved["test"]
        results.append(SeedResult(seed, folder, test["error"], test.get("mc_error")))
    return results


def summary(results: list[SeedResult]) -> dict:
    """Mean, minimum and maximum of the deterministic test error (in %) over ``results``, and the seeds counted."""
    errors = [100 * r.error for r in results]
    return {"seeds": [r.seed for r in results], "mean": statistics.fmean(errors), "min": min(errors),
            "max": max(errors)}


def seeds_cell(results: list[SeedResult]) -> str:
    """The README results table's seeds cell: ``mean (min-max), N seeds``, or "—" with fewer than two seeds."""
    if len(results) < 2:
        return "—"
    s = summary(results)
    return f"{s['mean']:.2f} ({s['min']:.2f}-{s['max']:.2f}), {len(results)} seeds"


def markdown(rows: list[str], root: Path = REPO) -> str:
    """A markdown table: each row's deterministic test error per seed, and the README's seeds cell."""
    lines = ["| row | seeds | test error per seed (%) | mean (range) |", "|---|---|---|---|"]
    for row in rows:
        results = seed_results(row, root)
        if results:
            per_seed = ", ".join(f"{100 * r.error:.2f}" for r in results)
            seeds = ", ".join(str(r.seed) for r in results)
            lines.append(f"| `{row}` | {seeds} | {per_seed} | {seeds_cell(results)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", nargs="*", help="rows (default: every preset)")
    args = parser.parse_args(argv)
    unknown = [row for row in args.rows if row not in PRESETS]
    if unknown:
        parser.error(f"rows: unknown {unknown}; known: {', '.join(PRESETS)}")
    print(markdown(args.rows or list(PRESETS)))


if __name__ == "__main__":
    main()
