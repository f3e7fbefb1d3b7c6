"""Train the Recurrent Attention Model (Mnih et al. 2014) on GlimpseMNIST-v0, then report its test error.

    python train/ram_agent.py                              # 28x28 MNIST, 6 glimpses of 8x8 (the default preset)
    python train/ram_agent.py --preset translated60-4g     # 60x60 translated MNIST, 4 glimpses, 12x12 x 3 scales
    python train/ram_agent.py --recipe cluttered60-8g      # every stage of a shipped checkpoint, in turn
    python train/ram_agent.py --resume runs/mnist28-6g-... # continue a run that was stopped
    python train/ram_agent.py --list-presets               # the paper's rows and the recipes
    python train/ram_agent.py --seeds 0,1,2 --run-dir runs/g   # 3 seeds at once, one batched step: runs/g/seed<N>
    torchrun --standalone --nproc_per_node=2 train/ram_agent.py --preset cluttered60-8g   # 2 processes (GPUs)
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 train/ram_agent.py ...

The agent learns through the env's batched vector env (the env is the data pipeline): every training image is shown
in M slots (each with a canvas of its own, or with --shared-canvas one canvas for the M), so the baseline and the
advantage see M sampled location paths of it; an epoch visits every training image once. The hybrid loss: cross-
entropy on the final class scores + MSE of the baseline against the reward + rl_weight * REINFORCE. Model selection
uses the validation split (the last 5,000 training digits); the test split is touched once, at the end, by the best
checkpoint.

A run folder holds config.json (the resolved configuration), metrics.jsonl (one line per epoch), best.pt and
last.pt (written atomically each epoch), results.json and a figure of the learned glimpse paths. last.pt is an
epoch's commit point: it is written first and holds what the epoch's other outputs need, and --resume makes
metrics.jsonl and best.pt agree with it, so a kill at any moment loses or repeats nothing. A run folder in use is
locked: a second trainer on it is refused, naming the first.

Under torchrun the same script trains with N processes (ranks): each plays batch_size / N of every batch's images
in its own slice of the batched env, with random streams of its own, and DistributedDataParallel averages the
gradients; --batch-size stays the global batch, so every hyperparameter means the same at any N. Validation and
the test are split over the ranks too. Rank 0 alone writes the run folder and prints; --resume needs the same N.

A bad flag, or an input it names that cannot be used, is an `error: ...` naming it (exit status 2) before anything
is written. The machinery is the package's (agents.training); this script is its command line.
"""

from __future__ import annotations

from pathlib import Path

from agents.training.cli import main as _main


def draw_figures(run_dir: Path, data_dir: str | None) -> None:
    """The run's figures (the learned glimpse paths, the learning curves); matplotlib and pygame are imported only
    now, so that training needs neither until its end."""
    from agents.figures import draw_run_figures

    draw_run_figures(run_dir, data_dir)


def main(argv: list[str] | None = None) -> dict | None:
    return _main(argv, figures=draw_figures, description=__doc__)


if __name__ == "__main__":
    main()
