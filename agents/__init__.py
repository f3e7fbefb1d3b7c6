"""The Recurrent Attention Model agent for GlimpseMNIST: model, hybrid loss, rollouts and checkpoints."""

from agents.checkpoint import LoadedAgent, load_agent, save_agent
from agents.losses import HybridLoss, hybrid_loss
from agents.ram import RAMConfig, RecurrentAttentionModel, StepOutput
from agents.rollout import Episodes, evaluate, run_episodes

__all__ = [
    "Episodes",
    "HybridLoss",
    "LoadedAgent",
    "RAMConfig",
    "RecurrentAttentionModel",
    "StepOutput",
    "evaluate",
    "hybrid_loss",
    "load_agent",
    "run_episodes",
    "save_agent",
]
