"""The Recurrent Attention Model (Mnih, Heess, Graves and Kavukcuoglu, 2014) in PyTorch.

At each step the glimpse network encodes the retina glimpse and where it was taken, the recurrent core folds it
into its state, and from that state the location policy picks the next location (a Gaussian with fixed standard
deviation), the baseline predicts the expected reward and the classifier scores the classes. With
``learn_first_location`` the agent also chooses its first glimpse (passed to the env's ``reset`` through
:meth:`RecurrentAttentionModel.reset_options`); before any glimpse its knowledge is the same for every image, so that
policy's mean is one learned location, trained by REINFORCE like the others.

Gradient flow, as the hybrid loss wants it (see :mod:`agents.losses`): by default the location head and the
baseline read a *detached* core state and the sampled location is detached before it goes back to the env. So
cross-entropy trains the glimpse network, the core and the classifier; REINFORCE trains only the location head; the
baseline learns only from its own regression loss. With ``reinforce_core`` the location head reads the core state
itself, so REINFORCE also trains the core and the glimpse network (the paper's section 3, where every parameter
belongs to the policy) and the state learns features for "where next" as well as "which digit".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from gymnasium import spaces
from torch.special import log_ndtr

from glimpse_env.config import _check_float

CORES = ("rnn", "lstm")
State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class RAMConfig:
    """Architecture of the model. Defaults are the paper's sizes (glimpse 128/128 -> 256, core 256)."""

    scales: int = 1
    glimpse_size: int = 8
    what_hidden: int = 128  # h_g: the "what" path on the glimpse pixels
    where_hidden: int = 128  # h_l: the "where" path on the location
    glimpse_out: int = 256  # g: the glimpse network's output
    core: str = "rnn"  # "rnn": the paper's ReLU RNN; "lstm"
    core_size: int = 256
    loc_std: float = 0.1  # standard deviation of the location policy, on [-1, 1]; its one default (the trainer's)
    learn_first_location: bool = False  # the agent picks its first glimpse too (else the env does)
    reinforce_core: bool = False  # REINFORCE reaches the core and glimpse network too (else only the location head)
    num_classes: int = 10

    def __post_init__(self) -> None:
        for name in ("scales", "glimpse_size", "what_hidden", "where_hidden", "glimpse_out", "core_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.core not in CORES:
            raise ValueError(f"core must be one of {CORES}, got {self.core!r}")
        _check_float("loc_std", self.loc_std, 0.0, inclusive=False)  # its one check (the trainer's flag too)
        for name in ("learn_first_location", "reinforce_core"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @classmethod
    def from_spaces(cls, observation_space: spaces.Dict, action_space: spaces.Dict, **overrides) -> RAMConfig:
        """The config whose input and output sizes match an env's (single, not batched) spaces."""
        scales, glimpse_size, _ = observation_space["glimpse"].shape
        num_classes = action_space["prediction"].shape[0]
        return cls(scales=scales, glimpse_size=glimpse_size, num_classes=num_classes, **overrides)


class StepOutput(NamedTuple):
    location_mean: torch.Tensor  # B x 2, in (-1, 1); from the detached core state unless reinforce_core
    baseline: torch.Tensor  # B, the expected reward; computed from the detached core state
    logits: torch.Tensor  # B x classes
    state: State


class GlimpseNetwork(nn.Module):
    """g = ReLU(W_g h_g + W_l h_l) with h_g = ReLU(W glimpse) ("what") and h_l = ReLU(W location) ("where")."""

    def __init__(self, config: RAMConfig) -> None:
        super().__init__()
        self.what = nn.Linear(config.scales * config.glimpse_size**2, config.what_hidden)
        self.where = nn.Linear(2, config.where_hidden)
        # One matrix on [h_g, h_l] is the paper's sum of two linear maps, in one matmul.
        self.combine = nn.Linear(config.what_hidden + config.where_hidden, config.glimpse_out)

    def forward(self, glimpse: torch.Tensor, location: torch.Tensor) -> torch.Tensor:
        what = torch.relu(self.what(glimpse.flatten(1)))
        where = torch.relu(self.where(location))
        return torch.relu(self.combine(torch.cat([what, where], dim=1)))


class RecurrentAttentionModel(nn.Module):
    """The RAM agent: ``forward`` is one step; :meth:`act` turns a step into an env action."""

    def __init__(self, config: RAMConfig) -> None:
        super().__init__()
        self.config = config
        self.glimpse_net = GlimpseNetwork(config)
        if config.core == "rnn":
            self.core = nn.RNNCell(config.glimpse_out, config.core_size, nonlinearity="relu")
        else:
            self.core = nn.LSTMCell(config.glimpse_out, config.core_size)
        self.location_head = nn.Linear(config.core_size, 2)
        self.baseline_head = nn.Linear(config.core_size, 1)
        self.classifier = nn.Linear(config.core_size, config.num_classes)
        if config.learn_first_location:
            # Before any glimpse the state is the same for every image, so the first location's policy is a
            # learned mean (before tanh) and its baseline a learned constant, trained like the other locations.
            self.first_location_logit = nn.Parameter(torch.zeros(2))
            self.first_baseline = nn.Parameter(torch.zeros(()))

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        device = device if device is not None else self.classifier.weight.device
        zeros = torch.zeros(batch_size, self.config.core_size, device=device)
        return zeros if self.config.core == "rnn" else (zeros, zeros.clone())

    def first_location_mean(self, batch_size: int) -> torch.Tensor | None:
        """The policy's mean first location (B x 2), or None when the env picks the first glimpse."""
        if not self.config.learn_first_location:
            return None
        return torch.tanh(self.first_location_logit).expand(batch_size, 2)

    @torch.no_grad()
    def reset_options(
        self, batch_size: int, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """The env ``reset`` options that put the first glimpse where the agent wants it (empty if it does not
        choose): ``{"location": B x 2}``, sampled or, with ``deterministic``, the policy's mean."""
        mean = self.first_location_mean(batch_size)
        if mean is None:
            return {}
        location = mean if deterministic else self.sample_location(mean, generator)[0]
        return {"location": location}

    def forward(self, observation: dict[str, torch.Tensor], state: State, core_by_ops: bool = False) -> StepOutput:
        """One step. ``core_by_ops``: the core's cell written out in tensor ops (:func:`cell_by_ops`), for vmap."""
        encoded = self.glimpse_net(observation["glimpse"], observation["location"])
        state = cell_by_ops(self.core, encoded, state) if core_by_ops else self.core(encoded, state)
        hidden = state if self.config.core == "rnn" else state[0]
        detached = hidden.detach()  # the baseline's loss (and REINFORCE, by default) must not reach the core
        policy_input = hidden if self.config.reinforce_core else detached
        # Heads leave in float32 whatever precision the matmuls ran in (log-probabilities need it).
        location_mean = torch.tanh(self.location_head(policy_input).float())
        baseline = self.baseline_head(detached).float().squeeze(1)
        return StepOutput(location_mean, baseline, self.classifier(hidden).float(), state)

    def sample_location(
        self, location_mean: torch.Tensor, generator: torch.Generator | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A location from the policy, clipped to ``[-1, 1]`` (detached), and its log-probability (B).

        The env clips locations, so the policy is a censored Gaussian: a location on the border has the
        probability of all the samples beyond it, and the log-probability is that of the location actually used.
        ``noise``: the standard normal draw, when the caller made it (many seeds at once draw each seed's from its
        own stream, outside vmap); else drawn here from ``generator``.
        """
        std = self.config.loc_std
        if noise is None:
            noise = torch.randn(location_mean.shape, generator=generator, device=location_mean.device)
        location = (location_mean.detach() + std * noise).clamp(-1.0, 1.0)
        return location, self.location_log_prob(location_mean, location)

    def location_log_prob(self, location_mean: torch.Tensor, location: torch.Tensor) -> torch.Tensor:
        """Log-probability (B, or ... x B) of the clipped ``location`` under the censored Gaussian around
        ``location_mean``."""
        std = self.config.loc_std
        z = (location - location_mean) / std
        # torch.full, not torch.tensor: no copy from the host, which a CUDA graph cannot hold (same float32)
        inside = -0.5 * z**2 - torch.log(torch.full((), std * (2 * torch.pi) ** 0.5, device=z.device))
        upper = log_ndtr((location_mean - 1.0) / std)  # P(sample >= 1)
        lower = log_ndtr((-1.0 - location_mean) / std)  # P(sample <= -1)
        log_prob = torch.where(location >= 1.0, upper, torch.where(location <= -1.0, lower, inside))
        return log_prob.sum(dim=-1)  # -1: also for many seeds' means at once (seed x B x 2), without vmap

    @torch.no_grad()
    def act(
        self,
        observation: dict[str, torch.Tensor],
        state: State,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[dict[str, torch.Tensor], State]:
        """The env action for a batch of observations: ``{"location", "prediction"}`` and the next state.

        ``deterministic=True`` looks at the policy's mean location instead of sampling.
        """
        out = self(observation, state)
        if deterministic:
            location = out.location_mean
        else:
            location, _ = self.sample_location(out.location_mean, generator)
        return {"location": location, "prediction": out.logits}, out.state


def cell_by_ops(core: nn.RNNCell | nn.LSTMCell, x: torch.Tensor, state: State) -> State:
    """``core(x, state)`` written out in tensor ops, in the order of ATen's CPU cells (``linear_hh(h) +
    linear_ih(x)``, then the nonlinearity or the LSTM's gates): torch.func.vmap has no batching rule for torch's fused
    cells (rnn_relu_cell falls back to a loop over the batch, lstm_cell fails), and many seeds at once
    (:mod:`agents.training.seeds`) vmap the model over stacked weights."""
    hidden = state if isinstance(core, nn.RNNCell) else state[0]
    gates = F.linear(hidden, core.weight_hh, core.bias_hh) + F.linear(x, core.weight_ih, core.bias_ih)
    if isinstance(core, nn.RNNCell):
        return torch.relu(gates)
    ingate, forgetgate, cellgate, outgate = gates.chunk(4, dim=-1)
    cell = forgetgate.sigmoid() * state[1] + ingate.sigmoid() * cellgate.tanh()
    return outgate.sigmoid() * cell.tanh(), cell
