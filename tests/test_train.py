"""The training script: a short end-to-end run, resuming a stopped run, refusing another configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_FLAGS, TINY_TEST_IMAGES

from agents import RAMConfig, RecurrentAttentionModel, load_agent
from agents.checkpoint import atomic_torch_save, read_checkpoint
from agents.training import cli, evaluation, precision, presets, step
from agents.training.config import TrainConfig
from agents.training.distributed import Distributed
from glimpse_env.vector_env import GlimpseMNISTVectorEnv

REPO = Path(__file__).resolve().parents[1]

# The tests' tiny run (tests/conftest.py) with 8 steps of 64 images an epoch and a Monte-Carlo test of 2 paths.
QUICK = [*TINY_FLAGS, "--train-subset", "512", "--batch-size", "64", "--test-mc", "2"]


def run(tmp_path: Path, name: str, *flags: str, figures=None) -> dict:
    return cli.main([*QUICK, "--run-dir", str(tmp_path / name), *flags], figures=figures)


def test_resumed_run_matches_an_uninterrupted_one(mnist_dir, tmp_path, capsys, monkeypatch):
    straight = run(tmp_path, "straight", "--epochs", "2")

    calls = []

    def killed_in_second_epoch(*args, **kwargs):  # the run is stopped before its second epoch is saved
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    real_evaluate = evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "stopped", "--epochs", "2")
    monkeypatch.setattr(evaluation, "evaluate", real_evaluate)
    assert len((tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()) == 1
    resumed = cli.main(["--resume", str(tmp_path / "stopped")])
    assert "resuming" in capsys.readouterr().out
    lines = (tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    a = load_agent(tmp_path / "straight" / "last.pt").model.state_dict()
    b = load_agent(tmp_path / "stopped" / "last.pt").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test"]["error"] == straight["test"]["error"]
    config = json.loads((tmp_path / "stopped" / "config.json").read_text())
    assert config["n_glimpses"] == 3 and config["train_subset"] == 512


def test_resume_refuses_another_configuration(mnist_dir, tmp_path, refused):
    run(tmp_path, "run", "--epochs", "1")
    refused(cli.main, ["--resume", str(tmp_path / "run"), "--n-glimpses", "4"],
            "refusing to continue with another configuration.*n_glimpses")


def test_resume_of_a_run_written_before_learn_first_location(mnist_dir, tmp_path, capsys):
    run(tmp_path, "old", "--epochs", "1", "--no-learn-first-location")
    folder = tmp_path / "old"
    config = json.loads((folder / "config.json").read_text())
    del config["learn_first_location"]  # as written by a version without the option
    (folder / "config.json").write_text(json.dumps(config))
    payload = read_checkpoint(folder / "last.pt")
    del payload["extra"]["train_config"]["learn_first_location"]
    atomic_torch_save(payload, folder / "last.pt")
    cli.main(["--resume", str(folder), "--epochs", "2"])
    assert "resuming" in capsys.readouterr().out
    assert not load_agent(folder / "last.pt").model.config.learn_first_location


@pytest.mark.parametrize("learned", [False, True], ids=["env-first", "learned-first"])
def test_results_and_evaluate_script_agree(mnist_dir, tmp_path, capsys, learned):
    flag = "--learn-first-location" if learned else "--no-learn-first-location"
    results = run(tmp_path, "run", "--epochs", "1", flag)
    assert load_agent(tmp_path / "run" / "best.pt").model.config.learn_first_location == learned
    assert results["test"]["error"] < 0.85  # better than the 90% error of guessing, after only 8 steps
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["test"] == results["test"]
    # --test-subset: results.json says the figures are of the first TINY_TEST_IMAGES test images, not the split's.
    assert saved["test_images"] == results["test"]["num_images"] == TINY_TEST_IMAGES
    assert "not the split's error" in saved["test_note"]
    subset = ["--num-images", str(TINY_TEST_IMAGES)]
    cli.evaluate_main([str(tmp_path / "run" / "best.pt"), "--mc", "2", "--slots", "2500", "--json",
                          "--device", "cpu", *subset])
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["error"] == results["test"]["error"] and again["mc_error"] == results["test"]["mc_error"]
    cli.evaluate_main([str(tmp_path / "run" / "best.pt"), "--mc", "0", "--slots", "2500", "--markdown",
                          "--device", "cpu", *subset])
    row = capsys.readouterr().out.strip().splitlines()[-1].split(" | ")
    assert row[2] == ("learned" if learned else "random") and row[3] == f"{100 * results['test']['error']:.2f}%"


def test_init_from_loads_a_compatible_checkpoint_and_refuses_others(mnist_dir, tmp_path, capsys, refused):
    run(tmp_path, "source", "--epochs", "1", "--no-learn-first-location")
    source = tmp_path / "source" / "best.pt"
    # One epoch at a negligible learning rate keeps the weights as loaded.
    run(tmp_path, "fine", "--epochs", "1", "--init-from", str(source), "--reinforce-core", "--lr", "1e-12",
        "--lr-final", "1e-12")
    assert "initialised from" in capsys.readouterr().out
    loaded = load_agent(source).model.state_dict()
    tuned = load_agent(tmp_path / "fine" / "last.pt").model.state_dict()
    assert all(torch.allclose(loaded[k], tuned[k], atol=1e-6) for k in loaded)
    assert "first_location_logit" in tuned  # new in this run: starts at its own initialisation
    # The record names the exact input: the file read and its bytes' hash (a shipped name may be retrained later).
    import hashlib
    kept = json.loads((tmp_path / "fine" / "init_from.json").read_text())
    assert kept == {"init_from": str(source), "file": str(source),
                    "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    assert not (tmp_path / "source" / "init_from.json").exists()
    # A curriculum: another task with the same retina and architecture (here more glimpses) starts from it too.
    run(tmp_path, "longer", "--epochs", "1", "--init-from", str(source), "--n-glimpses", "4")
    assert "trained on another task: {'n_glimpses': (3, 4)}" in capsys.readouterr().out
    refused(cli.main, [*QUICK, "--run-dir", str(tmp_path / "other"), "--init-from", str(source), "--scales", "2"],
            "--init-from .*another architecture or retina.*scales")
    refused(cli.main, [*QUICK, "--run-dir", str(tmp_path / "wider"), "--init-from", str(source), "--core-size", "64"],
            "--init-from .*core_size")
    assert not (tmp_path / "other").exists() and not (tmp_path / "wider").exists()  # refused before any write


def test_learning_curves_are_drawn_and_a_failed_drawing_keeps_the_results(mnist_dir, tmp_path, monkeypatch, capsys):
    import agents.figures as figures

    monkeypatch.setattr(figures, "write_glimpse_figures", lambda *args, **kwargs: {})  # tested on their own
    run(tmp_path, "drawn", "--epochs", "1", "--test-mc", "0", "--figure", figures=figures.draw_run_figures)
    assert (tmp_path / "drawn" / "learning-curves.png").stat().st_size > 0

    def broken(*args, **kwargs):
        raise RuntimeError("no display")

    monkeypatch.setattr(figures, "plot_runs", broken)
    monkeypatch.setattr(figures, "write_glimpse_figures", broken)
    results = run(tmp_path, "broken", "--epochs", "1", "--test-mc", "0", "--figure", figures=figures.draw_run_figures)
    err = capsys.readouterr().err
    assert "learning curves were not drawn (RuntimeError: no display)" in err
    assert "glimpse paths were not drawn (RuntimeError: no display)" in err
    assert json.loads((tmp_path / "broken" / "results.json").read_text()) == results
    assert not (tmp_path / "broken" / "learning-curves.png").exists()
    # A hook that fails as a whole (matplotlib missing, say) costs the figures only.
    results = run(tmp_path, "no-hook", "--epochs", "1", "--test-mc", "0", "--figure", figures=broken)
    assert "the figures were not drawn (RuntimeError: no display)" in capsys.readouterr().err
    assert json.loads((tmp_path / "no-hook" / "results.json").read_text()) == results


@pytest.mark.slow
def test_the_script_trains_resumes_and_draws_its_figures(mnist_dir, tmp_path):
    """python train/ram_agent.py as a user runs it: a 1-epoch run with its figures, then a --resume of it."""
    folder = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run([sys.executable, "train/ram_agent.py", *QUICK, "--epochs", "1", "--test-mc", "0",
                            "--figure", "--run-dir", str(folder)], cwd=REPO, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-3000:]
    assert {"learning-curves.png", "glimpse_paths-glimpses.png", "results.json"} <= {p.name for p in folder.iterdir()}
    assert not (folder / ".lock").exists()  # released at the end
    again = subprocess.run([sys.executable, "train/ram_agent.py", "--resume", str(folder), "--epochs", "2"],
                           cwd=REPO, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming" in again.stdout and "config.json: epochs 1 -> 2" in again.stdout
    assert [json.loads(line)["epoch"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def clipped_gradients(digits, rl_weight: float, separately: bool) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """The gradients the trainer steps with, for one batch of episodes whatever rl_weight (the same seeds)."""
    config = TrainConfig(n_glimpses=3, rl_weight=rl_weight, clip_separately=separately, grad_clip=1.0)
    torch.manual_seed(0)
    env = GlimpseMNISTVectorEnv(32, split="test", digits=digits, n_glimpses=3)
    model = RecurrentAttentionModel(RAMConfig.from_spaces(env.single_observation_space, env.single_action_space,
                                                          **config.model_kwargs()))
    options = {"indices": torch.arange(16).repeat_interleave(2), "slots_per_canvas": 2}
    loss, _ = step.EpisodeLoss(model, env, rl_weight)(options)
    norm = step.backward_and_clip(loss, list(model.parameters()), config, Distributed())
    return {name: p.grad.clone() for name, p in model.named_parameters()}, norm


def test_clip_separately_keeps_a_huge_reinforce_gradient_off_the_classifier(tiny_digits):
    supervised = ("classifier.weight", "core.weight_hh", "glimpse_net.what.weight", "baseline_head.weight")
    alone, _ = clipped_gradients(tiny_digits, 0.0, separately=True)
    huge, norm = clipped_gradients(tiny_digits, 1e6, separately=True)
    assert norm > 1e3  # REINFORCE's gradient is huge...
    assert all(torch.equal(alone[name], huge[name]) for name in supervised)  # ...and the classifier's step the same
    location = torch.cat([huge["location_head.weight"].flatten(), huge["location_head.bias"],
                          huge["first_location_logit"]])
    assert 0.5 < float(location.norm()) <= 1.0 + 1e-5  # clipped on its own, to --grad-clip
    coupled_alone, _ = clipped_gradients(tiny_digits, 0.0, separately=False)
    coupled, _ = clipped_gradients(tiny_digits, 1e6, separately=False)
    # One global norm: the same huge REINFORCE gradient all but erases the classifier's gradient.
    assert coupled["classifier.weight"].norm() < 1e-3 * coupled_alone["classifier.weight"].norm()
    assert torch.equal(coupled_alone["classifier.weight"], alone["classifier.weight"])  # rl_weight 0: no change


def test_location_noise_is_annealed_over_the_epochs(mnist_dir, tmp_path, refused):
    config = TrainConfig(loc_std=0.2, loc_std_final=0.05, epochs=4)
    assert [round(step.location_std(config, epoch), 6) for epoch in (1, 2, 3, 4)] == [0.2, 0.15, 0.1, 0.05]
    assert step.location_std(TrainConfig(loc_std=0.2), 3) == 0.2  # 0: constant
    run(tmp_path, "annealed", "--epochs", "2", "--loc-std", "0.2", "--loc-std-final", "0.05")
    # Each checkpoint records the noise its model was last trained with: the final epoch's.
    assert load_agent(tmp_path / "annealed" / "last.pt").model.config.loc_std == pytest.approx(0.05)
    refused(cli.main, [*QUICK, "--run-dir", str(tmp_path / "bad"), "--loc-std-final", "-0.1"],
            "argument --loc-std-final: must be a finite number >= 0")


def test_weight_average_is_validated_kept_and_resumed(mnist_dir, tmp_path, monkeypatch, refused):
    straight = run(tmp_path, "straight", "--epochs", "2", "--ema-decay", "0.9")
    last = read_checkpoint(tmp_path / "straight" / "last.pt")
    average = {k.removeprefix("module."): v for k, v in last["extra"]["average"].items() if k.startswith("module.")}
    live = last["model"]
    assert any(not torch.equal(average[k], live[k]) for k in live)  # an average, not the live weights
    rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert all("val_error_live" in row for row in rows)
    best_epoch = min(rows, key=lambda row: row["val_error"])["epoch"]
    if best_epoch == 2:  # best.pt holds the averaged weights, which the test figure is computed from
        best = read_checkpoint(tmp_path / "straight" / "best.pt")["model"]
        assert all(torch.equal(best[k], average[k]) for k in best)

    # Killed in the second epoch, then resumed: the average goes on exactly where it stopped.
    calls = []
    real_evaluate = evaluation.evaluate

    def killed_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # epoch 1 validates twice (average and live weights)
            raise KeyboardInterrupt
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "stopped", "--epochs", "2", "--ema-decay", "0.9")
    monkeypatch.setattr(evaluation, "evaluate", real_evaluate)
    resumed = cli.main(["--resume", str(tmp_path / "stopped")])
    again = read_checkpoint(tmp_path / "stopped" / "last.pt")["extra"]["average"]
    assert all(torch.equal(again[k], last["extra"]["average"][k]) for k in again)
    assert [resumed["test"][k] for k in ("error", "mc_error")] == [straight["test"][k] for k in ("error", "mc_error")]
    refused(cli.main, ["--resume", str(tmp_path / "stopped"), "--ema-decay", "0.5", "--epochs", "3"],
            "refusing to continue.*ema_decay")


def test_a_near_zero_decay_averages_nothing_and_bad_decays_are_refused(mnist_dir, tmp_path, refused):
    run(tmp_path, "none", "--epochs", "1", "--ema-decay", "1e-12")
    rows = [json.loads(line) for line in (tmp_path / "none" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["val_error"] == rows[0]["val_error_live"]
    for bad in ("1", "-0.1", "1.5"):
        refused(cli.main, [*QUICK, "--run-dir", str(tmp_path / f"bad{bad}"), "--ema-decay", bad],
                "argument --ema-decay: must be a finite number in")


@pytest.mark.parametrize("flags, expected", [("fpu sse avx2 fma avx512f", None),
                                             ("avx2 avx512f avx512_bf16", torch.bfloat16),
                                             ("avx512f amx_bf16 amx_tile", torch.bfloat16)])
def test_auto_precision_is_bf16_only_on_cpus_with_bf16_instructions(monkeypatch, flags, expected):
    monkeypatch.setattr(precision.Path, "read_text", lambda self, *args, **kwargs: f"flags\t\t: {flags}\n")
    cpu = torch.device("cpu")
    assert precision.pick_precision("auto", cpu) == expected
    assert precision.pick_precision("fp32", cpu) is None and precision.pick_precision("bf16", cpu) == torch.bfloat16


def test_auto_precision_is_fp32_where_the_cpu_cannot_be_read(monkeypatch):
    def unreadable(self, *args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(precision.Path, "read_text", unreadable)
    assert precision.pick_precision("auto", torch.device("cpu")) is None


def test_a_recipe_trains_its_stages_in_turn_and_continues_where_it_stopped(mnist_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(presets.RECIPES, "mnist28-6g", [dict(epochs=1), dict(epochs=2, lr=5e-4, reinforce_core=True)])
    recipe = [*QUICK, "--recipe", "mnist28-6g"]
    straight = cli.main([*recipe, "--run-dir", str(tmp_path / "straight")])
    first, second = (json.loads((tmp_path / "straight" / f"stage{i}" / "config.json").read_text()) for i in (1, 2))
    assert first["epochs"] == 1 and first["init_from"] == "" and not first["reinforce_core"]
    assert second["init_from"] == str(tmp_path / "straight" / "stage1" / "best.pt")
    assert (second["epochs"], second["lr"], second["reinforce_core"]) == (2, 5e-4, True)
    assert first["n_glimpses"] == second["n_glimpses"] == 3  # flags given with --recipe reach every stage
    assert straight == json.loads((tmp_path / "straight" / "stage2" / "results.json").read_text())
    assert "initialised from" in capsys.readouterr().out

    calls = []
    real_validate = evaluation.validate

    def killed_in_the_second_stage(*args, **kwargs):  # stage 1 validates once; stage 2 is killed in its epoch 2
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(evaluation, "validate", killed_in_the_second_stage)
    with pytest.raises(KeyboardInterrupt):
        cli.main([*recipe, "--run-dir", str(tmp_path / "stopped")])
    monkeypatch.setattr(evaluation, "validate", real_validate)
    stage1_metrics = (tmp_path / "stopped" / "stage1" / "metrics.jsonl").read_text()
    again = cli.main([*recipe, "--run-dir", str(tmp_path / "stopped")])  # the same command continues it
    out = capsys.readouterr().out
    assert "is finished" in out and "resuming" in out
    assert (tmp_path / "stopped" / "stage1" / "metrics.jsonl").read_text() == stage1_metrics  # not trained again
    a = read_checkpoint(tmp_path / "straight" / "stage2" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "stopped" / "stage2" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again["test"]["error"] == straight["test"]["error"]
    assert (tmp_path / "stopped" / "stage2" / "command.txt").read_text().rstrip().endswith("# stage 2 of 2")


def test_a_recipe_refuses_resume_init_from_and_preset(mnist_dir, tmp_path, refused):
    for extra in (["--resume", str(tmp_path)], ["--init-from", str(tmp_path / "x.pt")], ["--preset", "mnist28-4g"]):
        refused(cli.main, [*QUICK, "--recipe", "cluttered60-8g", *extra],
                "argument --recipe: starts each stage from the one before")
