"""Behaviour preserved, proved (issue 18): short CPU runs of the trainer's command line, recorded before the
training machinery moved into ``agents.training``, must still come out bit for bit the same.

Each run is ``python train/ram_agent.py ...`` in a subprocess with one thread. What is pinned, per run: the
resolved config.json, every metrics.jsonl row (timings aside), a SHA-256 of the weights in best.pt and last.pt
(last.pt's weight average and optimizer state too), and results.json's test result and best validation error.
The runs cover fp32 and bf16, the weight average with Monte-Carlo validation and annealed location noise, the
separate clipping with the full-network gradient and a constant schedule, and a 60x60 cluttered canvas with shared
canvases (the env's compose is being made faster: a cluttered run must still match).

Bits depend on the arithmetic underneath: the fixture keeps one record per machine fingerprint (torch version, CPU
capability, bf16 instructions), and the test skips (saying so) on a machine none was recorded on. Record one there,
or re-record, only for a change meant to alter results, with ``python tests/test_behaviour_preserved.py --record``
(it replaces this machine's record and prints what changed).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # three full training runs in subprocesses, each testing on all 10,000 test digits
REPO = Path(__file__).resolve().parents[1]
RECORD = Path(__file__).parent / "fixtures" / "behaviour_preserved.json"
COMMON = ["--device", "cpu", "--eval-slots", "2500", "--no-figure"]
RUNS = {
    "mnist28-fp32-average": ["--preset", "mnist28-6g", "--precision", "fp32", "--epochs", "2", "--train-subset",
                             "384", "--batch-size", "64", "--mc-samples", "2", "--val-subset", "300", "--val-mc",
                             "2", "--test-mc", "2", "--ema-decay", "0.9", "--loc-std-final", "0.05", "--seed", "3"],
    "mnist28-bf16-clip-separately": ["--preset", "mnist28-3g", "--precision", "bf16", "--epochs", "2",
                                     "--train-subset", "256", "--batch-size", "64", "--mc-samples", "2",
                                     "--val-subset", "300", "--test-mc", "0", "--clip-separately",
                                     "--reinforce-core", "--lr-schedule", "constant"],
    "cluttered60-fp32-shared-canvas": ["--preset", "cluttered60-4g", "--precision", "fp32", "--epochs", "1",
                                       "--train-subset", "64", "--batch-size", "32", "--mc-samples", "2",
                                       "--val-subset", "200", "--test-mc", "0", "--shared-canvas",
                                       "--no-learn-first-location",
                                       # the values the preset had when this run was recorded (it now starts
                                       # from the translated agent): the run pins the code, not the preset
                                       "--no-reinforce-core", "--ema-decay", "0", "--lr", "2e-3",
                                       "--warmup-epochs", "0.5", "--init-from", ""],
}
TIMINGS = {"epoch_seconds", "train_episodes_per_second", "wall_seconds"}
MACHINE_DEPENDENT_CONFIG = {"run_dir", "data_dir"}


def fingerprint() -> dict:
    """What the bits depend on besides the code: torch's version and the CPU's vector instructions."""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    return {"torch": torch.__version__.split("+")[0], "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_instructions": sorted({f for f in ("amx_bf16", "avx512_bf16") if f in flags})}


def weights_hash(tensors: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name]
        digest.update(name.encode())
        if isinstance(value, torch.Tensor):
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def flat(tree, prefix: str = "") -> dict:
    """A nested dict/list of tensors and numbers as one dict, keyed by path."""
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in flat(value, f"{prefix}{key}/").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, value in enumerate(tree) for k, v in flat(value, f"{prefix}{i}/").items()}
    return {prefix: tree}


def outcome(folder: Path) -> dict:
    """What a run folder says about the run, without timings or paths."""
    best = torch.load(folder / "best.pt", weights_only=True)
    last = torch.load(folder / "last.pt", weights_only=True)
    config = json.loads((folder / "config.json").read_text())
    results = json.loads((folder / "results.json").read_text())
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return {
        "config": {k: v for k, v in config.items() if k not in MACHINE_DEPENDENT_CONFIG},
        "metrics": [{k: v for k, v in row.items() if k not in TIMINGS} for row in rows],
        "best_weights": weights_hash(best["model"]),
        "best_epoch": best["extra"]["metrics"]["epoch"],
        "best_loc_std": best["model_config"]["loc_std"],
        "last_weights": weights_hash(last["model"]),
        "last_average": weights_hash(last["extra"].get("average", {})),
        "last_optimizer": weights_hash(flat(last["extra"]["optimizer"])),
        "test": {k: v for k, v in results["test"].items() if k != "seconds"},
        "best_val_error": results["best_val_error"],
        "precision": results["precision"],
    }


def train(name: str, folder: Path) -> dict:
    # This checkout's packages, whatever is installed; one thread, as recorded.
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "PYTHONPATH": path}
    command = [sys.executable, "train/ram_agent.py", *RUNS[name], *COMMON, "--run-dir", str(folder)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return outcome(folder)


def records() -> list[dict]:
    """The fixture's records, one per machine fingerprint: {"fingerprint": ..., "runs": ...}."""
    return json.loads(RECORD.read_text())["records"] if RECORD.is_file() else []


def this_machines_record() -> dict | None:
    return next((r for r in records() if r["fingerprint"] == fingerprint()), None)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_a_short_run_is_bit_for_bit_what_it_was(mnist_dir, tmp_path, name):
    record = this_machines_record()
    if record is None:
        pytest.skip(f"recorded on {[r['fingerprint'] for r in records()]}, this machine is {fingerprint()}: bits "
                    "differ with the arithmetic underneath; record here with python tests/test_behaviour_preserved.py "
                    "--record")
    assert RUNS[name] == record["runs"][name]["argv"], "the run's flags changed: re-record deliberately"
    got = train(name, tmp_path / "run")
    want = record["runs"][name]["outcome"]
    for key in want:  # one key at a time: the message names what moved
        assert got[key] == want[key], f"{name}: {key} differs from the recorded run"


def main() -> None:
    if "--record" not in sys.argv:
        raise SystemExit("usage: python tests/test_behaviour_preserved.py --record")
    old = (this_machines_record() or {}).get("runs", {})
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in RUNS:
            runs[name] = {"argv": RUNS[name], "outcome": train(name, Path(tmp) / name)}
            before = old.get(name, {}).get("outcome", {})
            changed = [key for key, value in runs[name]["outcome"].items() if before.get(key) != value]
            said = "new on this machine" if not before else "changed " + ", ".join(changed) if changed else "unchanged"
            print(f"{name}: {said}")
    others = [r for r in records() if r["fingerprint"] != fingerprint()]
    RECORD.write_text(json.dumps({"records": [*others, {"fingerprint": fingerprint(), "runs": runs}]}, indent=1) + "\n")
    print(f"wrote {RECORD}")


if __name__ == "__main__":
    main()
