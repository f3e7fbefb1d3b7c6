"""Evaluate trained RAM checkpoints on GlimpseMNIST: test error with the deterministic policy and with
Monte-Carlo averaging of class probabilities over K sampled location paths.

    python train/evaluate.py assets/checkpoints/mnist28-6g.pt --mc 10
    python train/evaluate.py cluttered60-8g                         # a shipped agent, by name
    python train/evaluate.py assets/checkpoints/*.pt --markdown     # the README's results table, re-computed

A bad flag or checkpoint is an `error: ...` naming it (exit status 2) before anything is evaluated. The evaluation
is agents.training.evaluate_checkpoint; this script is its command line (agents.training.cli.evaluate_main).
"""

from agents.training.cli import evaluate_main


def main(argv: list[str] | None = None) -> None:
    evaluate_main(argv, description=__doc__)


if __name__ == "__main__":
    main()
