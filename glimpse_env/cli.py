"""Checks that the command lines (``python -m glimpse_env.play``, ``train/visualize.py``, ``train/plot.py``) make
before they do anything: a bad flag is an ``error: ...`` naming it and exit status 2, as argparse gives for an
unknown flag, never a traceback, and nothing is written before every check has passed.

The argparse types (:func:`int_in`, :func:`finite_float`, :func:`positive_float`, :data:`SEED`) turn a bad value
into argparse's own ``argument --flag: ...`` message; the ``check_*`` helpers take the parser and call ``parser.error``
with the same form (:func:`flag_message`), and so do the trainer's checks: one message form for every command line.
Their words are the env's checks' (:func:`glimpse_env.config._check_int`): ``must be an integer >= 1, got 0``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from glimpse_env.config import ENV_ARGUMENTS, MAX_SEED, GlimpseConfig, _check_int
from glimpse_env.data import DigitSet, load_digits


def int_in(minimum: int, maximum: int | None = None, shown: str | None = None) -> Callable[[str], int]:
    """An argparse ``type``: an integer in ``[minimum, maximum]`` (no upper bound when ``maximum`` is None);
    ``shown`` says the range in the error message instead."""
    allowed = shown or (f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer {allowed}, got {text!r}") from None
        try:
            return _check_int("value", value, minimum, allowed, maximum)  # the env's words, without the name
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error).removeprefix("value ")) from None

    parse.__name__ = "integer"  # argparse names the type in its own messages
    return parse


SEED = int_in(0, MAX_SEED, shown="in [0, 2**64 - 1]")  # every seed's one bound (glimpse_env.config.MAX_SEED)


def finite_float(text: str) -> float:
    """An argparse ``type``: a finite number (``nan`` and ``inf`` are refused; argparse names the flag)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse ``type``: a finite number > 0 (``nan``, ``inf`` and ``0`` are refused)."""
    try:
        value = finite_float(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def flag(name: str) -> str:
    """The command-line flag of a keyword argument: ``glimpse_size`` -> ``--glimpse-size``."""
    return "--" + name.replace("_", "-")


def flag_message(name: str, problem: object) -> str:
    """The one form of a refused flag's message, argparse's own: ``argument NAME: PROBLEM`` (``NAME`` a flag such
    as ``--seed``, or a positional argument's metavar)."""
    return f"argument {name}: {problem}"


def add_env_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per env argument of the task (:data:`glimpse_env.config.ENV_ARGUMENTS`), made from GlimpseConfig's
    fields (their type, choices and help); absent (None) unless given, so that the env's default stands."""
    for name in ENV_ARGUMENTS:
        env_field = GlimpseConfig.__dataclass_fields__[name]
        choices = env_field.metadata["choices"]
        parser.add_argument(flag(name), type=str if choices else int, choices=choices, default=None,
                            help=f"{env_field.metadata['help']} (default {env_field.default})")


def check_env_flags(parser: argparse.ArgumentParser, given: Mapping[str, Any]) -> None:
    """``parser.error`` naming the flag at fault unless ``given`` (keyword arguments of the env, each from its flag)
    makes a valid :class:`GlimpseConfig` (with defaults for the rest); the env checks its arguments once, there."""
    try:
        GlimpseConfig(**given)
    except ValueError as error:
        first = re.match(r"\w+", str(error))  # GlimpseConfig's messages begin with the field at fault
        name = first.group() if first else ""
        at_fault = flag(name) if name in given else "/".join(flag(key) for key in given)
        parser.error(flag_message(at_fault, error))


def output_folder_problem(folder: str | os.PathLike) -> str | None:
    """Why pictures cannot be written into ``folder`` (made as needed), or None when they can."""
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            return f"{folder} exists and is not a folder"
        return None if os.access(folder, os.W_OK | os.X_OK) else f"folder {folder} is not writable"
    parent = folder.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{folder} cannot be made: {parent} is a file, not a folder"
    return None if os.access(parent, os.W_OK | os.X_OK) else f"{folder} cannot be made: {parent} is not writable"


def check_output_folder(parser: argparse.ArgumentParser, name: str, folder: str | os.PathLike) -> None:
    """``parser.error`` naming the flag ``name`` unless ``folder`` exists or can be made, and is writable."""
    problem = output_folder_problem(folder)
    if problem:
        parser.error(flag_message(name, problem))


def check_output_file(
    parser: argparse.ArgumentParser, name: str, path: str | os.PathLike, suffixes: Mapping[str, str]
) -> None:
    """``parser.error`` naming the flag ``name`` unless ``path`` can be written: not a folder, its folder writable
    (made as needed), and its suffix one of ``suffixes`` (suffix without the dot -> a description)."""
    path = Path(path)
    if path.is_dir() or str(path).endswith(os.sep):
        parser.error(flag_message(name, f"{path} is a folder; give a file name, e.g. {path / 'figure.png'}"))
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in suffixes:
        known = ", ".join(f".{key}" for key in sorted(suffixes))
        parser.error(flag_message(name, f"{path} must end in one of {known} (the picture's format), got {path.name!r}"))
    check_output_folder(parser, name, path.parent)


def load_split(parser: argparse.ArgumentParser, split: str, data_dir: str | None) -> DigitSet:
    """The digits of ``split``, or ``parser.error`` naming ``--data-dir`` (missing, damaged or absent MNIST)."""
    try:
        return load_digits(split, data_dir)
    except (OSError, RuntimeError, ValueError) as error:
        fail(parser, "--data-dir", error)


def fail(parser: argparse.ArgumentParser, name: str, error: BaseException | str) -> NoReturn:
    """``parser.error`` with the message ``argument NAME: ERROR`` (what argparse prints for a bad value)."""
    parser.error(flag_message(name, error))
