"""Play GlimpseMNIST yourself, or watch a trained agent play it: ``python -m glimpse_env.play``.

You see only what the retina delivers: the canvas stays hidden, and every glimpse you take is painted back where
you took it (fine scales over coarse ones). Click where to look next (or move the cursor with the arrow keys and
press space); after the last glimpse press 0-9 to name the digit. Then the canvas, your path and the answer are
revealed and the score is kept: ``n`` for the next digit, ``q`` or Esc to quit.

``--agent CHECKPOINT`` lets a trained RAM choose the glimpses and the prediction instead: the canvas is shown, the
cursor marks where the agent will look next and the bars show its class probabilities after each glimpse. Space
advances a step (``a`` or ``--autoplay`` plays by itself). The env arguments then come from the checkpoint.
CHECKPOINT is a checkpoint file or the name of a shipped agent (``--agent mnist28-6g``: :mod:`agents.pretrained`).

``--versus CHECKPOINT``: you against a trained RAM. You play as above; the agent plays the same canvas with the
same glimpse budget (and the same first glimpse, unless it learned where to put its first one: then it uses its
own). Once you have named the digit, the agent's path (in magenta, on the revealed canvas), its answer and its
class probabilities are shown beside yours, and both scores are kept ("you 3/4 right (75%), agent 4/4 right
(100%)") and printed on exit.

Examples::

    python -m glimpse_env.play                                       # 28x28 MNIST, 6 glimpses of 8x8
    python -m glimpse_env.play --size 60 --scales 3 --glimpse-size 12 --n-glimpses 8 --clutter 4
    python -m glimpse_env.play --agent mnist28-6g --autoplay         # a shipped agent, by name
    python -m glimpse_env.play --agent assets/checkpoints/cluttered60-8g.pt  # or any checkpoint file
    python -m glimpse_env.play --versus mnist28-6g

The event handling lives in :class:`glimpse_env.play_loop.PlayLoop` (``handle_event``, ``update``, ``draw``), so
that tests can drive it with synthetic pygame events; :func:`main` is a thin loop around it. A bad flag (a missing,
damaged or unknown agent, ``--size 20``, ``--step-seconds nan``, a missing MNIST folder) is an ``error: ...`` naming
it, exit status 2, before any window opens.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import gymnasium as gym

import glimpse_env  # noqa: F401  (registers GlimpseMNIST-v0)
from glimpse_env.cli import SEED, add_env_flags, check_env_flags, fail, load_split, positive_float
from glimpse_env.config import ENV_ARGUMENTS, SPLITS, env_arguments
from glimpse_env.data import DigitSet
from glimpse_env.drawing import pygame
from glimpse_env.play_loop import PlayLoop

__all__ = ["PlayLoop", "build_loop", "build_parser", "main", "parse_args"]

AGENT_HELP = "a checkpoint file, or the name of a shipped agent (e.g. mnist28-6g, cluttered60-8g)"


def build_parser() -> argparse.ArgumentParser:
    """The command line's flags (``python -m glimpse_env.play --help``)."""
    parser = argparse.ArgumentParser(
        prog="python -m glimpse_env.play",
        description="Play GlimpseMNIST-v0 yourself, or watch a trained agent play it (--agent).",
    )
    add_env_flags(parser)  # --size, --scales, ...: GlimpseConfig's fields
    parser.add_argument("--split", choices=SPLITS, default="test", help="default test")
    parser.add_argument("--seed", type=SEED, default=None,
                        help="seed of the first digit and glimpse (in [0, 2**64 - 1])")
    parser.add_argument("--data-dir", default=None, help="folder of the MNIST .gz files (default $GLIMPSE_MNIST_DIR)")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--agent", metavar="CHECKPOINT", default=None, help=f"watch this trained agent play: {AGENT_HELP}")
    who.add_argument("--versus", metavar="CHECKPOINT", default=None, help=f"play against this agent: {AGENT_HELP}")
    parser.add_argument("--autoplay", action="store_true", help="with --agent: advance by itself")
    parser.add_argument("--step-seconds", type=positive_float, default=0.8,
                        help="autoplay pace (default 0.8 s per step)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The flags, checked on their own (each env flag by the env's own rules); exits 2 naming a bad one."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.autoplay and args.agent is None:
        parser.error("argument --autoplay: goes with --agent (an agent to watch)")
    check_env_flags(parser, given_env_flags(args))
    return args


def given_env_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The env arguments set by flags (:data:`glimpse_env.config.ENV_ARGUMENTS`; the rest take the env's defaults)."""
    return {name: getattr(args, name) for name in ENV_ARGUMENTS if getattr(args, name) is not None}


def load_opponent(args: argparse.Namespace) -> tuple[Any, dict[str, Any]] | None:
    """The ``--agent`` or ``--versus`` model and its env arguments (None without either); a missing, damaged or
    unknown one is an ``error:`` naming the flag."""
    name, checkpoint = ("--agent", args.agent) if args.agent is not None else ("--versus", args.versus)
    if checkpoint is None:
        return None
    from agents import load_agent  # at the point of use: glimpse_env does not depend on agents

    try:
        model, env_kwargs, _ = load_agent(checkpoint, "cpu")
    except (OSError, ValueError) as error:
        fail(build_parser(), name, error)
    return model, env_arguments(env_kwargs)


def build_loop(args: argparse.Namespace, digits: DigitSet | None = None) -> PlayLoop:
    """The env (and agent) the arguments ask for, in a :class:`PlayLoop`. ``digits`` replaces the split's (else
    they are loaded from ``--data-dir``: a missing folder is an ``error:`` naming it)."""
    given = given_env_flags(args)
    agent = None
    loaded = load_opponent(args)
    if loaded is not None:
        agent, env_kwargs = loaded
        ignored = {name: value for name, value in given.items() if env_kwargs.get(name, value) != value}
        if ignored:
            print(f"note: the agent was trained with {env_kwargs}; ignoring {ignored}", file=sys.stderr)
        given = env_kwargs
    if digits is None:
        digits = load_split(build_parser(), args.split, args.data_dir)
    env = gym.make("GlimpseMNIST-v0", split=args.split, digits=digits, **given)
    if args.versus is not None:
        return PlayLoop(env, seed=args.seed, opponent=agent)
    return PlayLoop(env, agent, autoplay=args.autoplay, step_seconds=args.step_seconds, seed=args.seed)


def open_window(loop: PlayLoop) -> pygame.Surface:
    """The window, titled after who plays; a ``pygame.error`` when there is no display."""
    pygame.display.init()
    screen = pygame.display.set_mode(loop.layout.size)
    if loop.opponent is not None:
        title = "GlimpseMNIST: you against the agent"
    else:
        title = "GlimpseMNIST: watch the agent" if loop.agent is not None else "GlimpseMNIST: name the digit"
    pygame.display.set_caption(title)
    return screen


def main(argv: Sequence[str] | None = None, digits: DigitSet | None = None) -> int:
    """Open the window and play until quit; prints the score. Exit status 2 for a bad flag (before any window),
    1 when no window can be opened."""
    loop = build_loop(parse_args(argv), digits)
    try:
        screen = open_window(loop)
    except pygame.error as error:
        pygame.display.quit()
        loop.env.close()
        print(f"error: cannot open the play window ({error}); it needs a display", file=sys.stderr)
        return 1
    clock = pygame.time.Clock()
    try:
        while loop.running:
            for event in pygame.event.get():
                loop.handle_event(event)
            loop.update()
            screen.blit(loop.draw(), (0, 0))
            pygame.display.flip()
            clock.tick(30)
    finally:
        loop.env.close()
        pygame.display.quit()
    print(f"score: {loop.score_text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
