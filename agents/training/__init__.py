"""Training the Recurrent Attention Model: the library under ``train/ram_agent.py`` and ``train/evaluate.py``.

    from agents.training import PRESETS, TrainConfig, train
    results = train(TrainConfig(**PRESETS["mnist28-6g"], epochs=1, run_dir="runs/quick"), command=[])

Modules, each one job: :mod:`~agents.training.presets` (the paper's rows and the recipes, as data),
:mod:`~agents.training.config` (the configuration, its flags and its checks), :mod:`~agents.training.distributed`
(torchrun), :mod:`~agents.training.precision` (bf16 or fp32, and where bf16 is fast),
:mod:`~agents.training.step` (one training step and its schedules),
:mod:`~agents.training.run_folder` (the run folder: lock, commit order, resume, random streams),
:mod:`~agents.training.evaluation` (validation and test), :mod:`~agents.training.trainer` (the Trainer and its
phases) and :mod:`~agents.training.cli` (the command lines).
"""

from agents.training.config import ConfigError, TaskConfig, TrainConfig
from agents.training.evaluation import SPLIT_SIZES, evaluate_checkpoint, format_result
from agents.training.precision import has_fast_bf16
from agents.training.presets import PRESETS, RECIPES, REFERENCE_ERRORS, SHIPPED_RECORDS
from agents.training.trainer import Trainer, train

__all__ = [
    "PRESETS",
    "RECIPES",
    "REFERENCE_ERRORS",
    "SHIPPED_RECORDS",
    "SPLIT_SIZES",
    "ConfigError",
    "TaskConfig",
    "TrainConfig",
    "Trainer",
    "evaluate_checkpoint",
    "format_result",
    "has_fast_bf16",
    "train",
]
