"""Figures of a trained RAM agent at work, for the README: where it looks, and what it sees there.

    python train/visualize.py mnist28-6g --out assets --rows 6 --seed 0 --play-window --versus-window --video

CHECKPOINT is a checkpoint file (``runs/RUN/best.pt``) or the name of a shipped agent (``mnist28-6g``,
``cluttered60-8g``: the ``.pt`` files of ``assets/checkpoints/``). Writes, into ``--out`` (named after the
checkpoint unless ``--name``):

* ``NAME-glimpses.png``: one row per test digit (chosen at random with ``--seed``): the canvas with the agent's
  numbered glimpse path, the label and the agent's answer; then every glimpse as the agent saw it, all scales at
  once as Mnih et al. picture them;
* ``NAME-episode.gif``: one episode, frame by frame, as ``render_mode="rgb_array"`` draws it;
* with ``--play-window``, ``NAME-play-window.png``: the human-play window (``python -m glimpse_env.play``) after
  a person took the agent's glimpses on the first digit and is about to name it;
* with ``--versus-window``, ``NAME-versus-window.png``: the window of ``python -m glimpse_env.play --versus``
  right after a scripted person played the grid's digits against the agent;
* with ``--video``, ``NAME-episode.mp4``: the GIF's episode as a video (needs moviepy: ``pip install -e ".[video]"``).

``--heatmap`` draws instead where the agent looks over many digits (``--num-images``, default the whole split):
``NAME-heatmap.png`` (matplotlib)::

    python train/visualize.py cluttered60-8g --heatmap --out assets

``--split`` chooses the digits of every figure: the test split (the default) for pictures of shipped models, the
validation split for anything that informs a choice during research (``--heatmap --split validation``).

A bad flag or input is an ``error: ...`` naming it (exit status 2) before anything is written. The figures are
:mod:`agents.figures`'s; this script is its command line (:func:`agents.figures.cli.visualize_main`).
"""

from agents.figures.cli import visualize_main as main

if __name__ == "__main__":
    main()
