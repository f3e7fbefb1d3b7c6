"""Learning curves of RAM training runs, read from their ``metrics.jsonl``.

    python train/plot.py assets/runs/mnist28-6g assets/runs/translated60-4g --out assets/learning-curves.png

draws one figure (PNG, or PDF, SVG, ... by the suffix of ``--out``; no display needed) of four panels, one line per
run: validation error against the epoch and against wall time, the training reward and the learning rate, with
the paper's and this project's reference errors of a run's preset (see :mod:`agents.figures.curves`). With
``--out`` omitted the figure goes to ``RUN_DIR/learning-curves.png`` of the first run.

A bad flag or input (a folder without ``metrics.jsonl``, a damaged line, an output path that cannot be written) is
an ``error: ...`` naming it (exit status 2) before anything is written. This script is the command line of
:func:`agents.figures.cli.plot_main`; the trainer draws a run's curves itself (:func:`agents.figures.plot_runs`).
"""

from agents.figures.cli import plot_main as main

if __name__ == "__main__":
    main()
