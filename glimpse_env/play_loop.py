"""The play window's state machine (:class:`PlayLoop`) and an agent's moves in the single env.

:class:`PlayLoop` handles pygame events (``handle_event``), advances an autoplaying agent (``update``) and draws the
window (``draw``), so that tests drive it with synthetic events; :mod:`glimpse_env.play` is the command line and
the thin loop around it. An agent here is anything with the :class:`agents.RecurrentAttentionModel` interface
(``reset_options``, ``initial_state``, ``act``): glimpse_env does not import ``agents`` (only the command line
loads a checkpoint, with an import at that point).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import glimpse_env  # noqa: F401  (registers GlimpseMNIST-v0)
from glimpse_env.config import NUM_CLASSES
from glimpse_env.drawing import pygame
from glimpse_env.pixels import paint_glimpses, softmax
from glimpse_env.render import FrameView, draw_frame, frame_layout

HUMAN_KEYS = "click or arrows + space: look there   0-9: name the digit   n: next digit   q/Esc: quit"
AGENT_KEYS = "space: next step   a: autoplay on/off   n: next digit   q/Esc: quit"
DIGIT_KEYS = {getattr(pygame, f"K_{digit}"): digit for digit in range(10)}
DIGIT_KEYS.update({getattr(pygame, f"K_KP{digit}"): digit for digit in range(10)})
ARROW_KEYS = {pygame.K_LEFT: (-1, 0), pygame.K_RIGHT: (1, 0), pygame.K_UP: (0, -1), pygame.K_DOWN: (0, 1)}
QUIT_KEYS = (pygame.K_q, pygame.K_ESCAPE)
ADVANCE_KEYS = (pygame.K_SPACE, pygame.K_RETURN, pygame.K_KP_ENTER)


def first_glimpse_options(agent: Any) -> dict[str, np.ndarray]:
    """The single env's ``reset`` options that put the agent's first glimpse where it wants it, deterministically
    (empty when the env chooses the first glimpse)."""
    return {key: value[0].cpu().numpy() for key, value in agent.reset_options(1, deterministic=True).items()}


def agent_step(agent: Any, observation: dict[str, np.ndarray], state: Any) -> tuple[dict[str, np.ndarray], Any]:
    """The agent's deterministic action for one single-env observation (numpy in, numpy out), and its next state."""
    batched = {key: torch.as_tensor(value)[None] for key, value in observation.items()}
    action, state = agent.act(batched, state, deterministic=True)
    return {key: value[0].cpu().numpy().astype(np.float32) for key, value in action.items()}, state


def agent_episode(
    env: gym.Env, agent: Any, seed: int | None = None, options: dict[str, Any] | None = None
) -> Iterator[dict[str, np.ndarray] | None]:
    """Play one deterministic episode of ``agent`` in the single env ``env``: reset it with ``seed`` and
    ``options`` (plus the agent's first glimpse, if it chooses one), then step to the end. Yields after the reset
    (None) and after every step (the action taken), so that the caller can look at the env in between."""
    observation, _ = env.reset(seed=seed, options={**(options or {}), **first_glimpse_options(agent)})
    yield None
    state = agent.initial_state(1)
    terminated = False
    while not terminated:
        action, state = agent_step(agent, observation, state)
        observation, _, terminated, _, _ = env.step(action)
        yield action


@dataclass(frozen=True)
class AgentEpisode:
    """The agent's episode on a person's canvas (``--versus``): played unseen before the person's, revealed after."""

    canvas: np.ndarray  # the canvas it played on: the person's
    locations: np.ndarray  # n x 2, where it looked
    probabilities: np.ndarray  # its final class probabilities
    answer: int
    label: int


@dataclass
class Score:
    """Digits named right out of digits played."""

    right: int = 0
    played: int = 0

    def __str__(self) -> str:
        percent = f" ({self.right / self.played:.0%})" if self.played else ""
        return f"{self.right}/{self.played} right{percent}"


class PlayLoop:
    """One play window's state: the episode, whose turn it is, the cursor and the score.

    Feed it every pygame event with :meth:`handle_event`, call :meth:`update` once per frame (it advances an
    autoplaying agent) and show :meth:`draw`. ``running`` turns False on quit.

    Phases: ``"look"`` (a person chooses where the next glimpse goes), ``"answer"`` (a person has taken every
    glimpse and names the digit), ``"watch"`` (the agent plays, a step per advance) and ``"reveal"`` (the episode
    is over; the canvas and the answer are shown). Keys and clicks that mean nothing in a phase are ignored.

    With an ``opponent``, each new digit is first played by the opponent agent, unseen, then by the person on the
    same canvas: both resets get the same per-episode seed (drawn from ``seed``), so that they draw the same digit,
    translation, distractors and first glimpse, whatever the split. The reveal shows the opponent's path and answer
    too, and :attr:`opponent_score` is kept beside :attr:`score`.

    Args:
        env: a ``GlimpseMNIST-v0`` env (``gym.make``; no render mode needed, the loop draws its own frames).
        agent: a :class:`agents.RecurrentAttentionModel` to watch, or None to play yourself.
        autoplay: the agent advances by itself, a step every ``step_seconds``.
        step_seconds: the autoplay pace (the revealed answer stays up for twice that).
        seed: seeds the first ``reset`` (the digits shown and the first glimpse's location); with an opponent, every
            episode's seed.
        opponent: a :class:`agents.RecurrentAttentionModel` that a person plays against (not with ``agent``).
    """

    def __init__(
        self,
        env: gym.Env,
        agent: Any | None = None,
        autoplay: bool = False,
        step_seconds: float = 0.8,
        seed: int | None = None,
        opponent: Any | None = None,
    ) -> None:
        if agent is not None and opponent is not None:
            raise ValueError("a PlayLoop either shows an agent playing (agent) or a person against one (opponent)")
        self.env = env
        self.agent = agent
        self.opponent = opponent
        self.autoplay = autoplay
        self.step_seconds = step_seconds
        self.config = env.unwrapped.config
        self.layout = frame_layout(self.config, note_lines=2 if opponent is None else 3)
        self.score = Score()
        self.opponent_score = Score()
        self.opponent_episode: AgentEpisode | None = None
        self.running = True
        self._seed = seed
        self._episode_seeds = np.random.default_rng(seed)  # with an opponent: one seed per episode, for both resets
        self._last_advance = -float("inf")
        self.new_episode()

    # ------------------------------------------------------------------ the episode
    def new_episode(self, index: int | None = None) -> None:
        """Reset the env on a new digit (dataset ``index`` of the split, default a random one): the first glimpse
        is given, the next is chosen."""
        options = {} if index is None else {"index": index}
        seed, self._seed = self._seed, None
        if self.opponent is not None:  # the opponent plays first, unseen; the same seed gives the person its canvas
            seed = int(self._episode_seeds.integers(2**31))
            self.opponent_episode = self._play_opponent(seed, options)
        if self.agent is not None:  # an agent that chooses its first glimpse too says where
            options.update(first_glimpse_options(self.agent))
        observation, _ = self.env.reset(seed=seed, options=options)
        self.glimpses = [observation["glimpse"]]  # every glimpse seen, in order (the hidden canvas shows them)
        self.cursor = observation["location"].copy()  # where the next glimpse goes
        self.answer: int | None = None
        self.label: int | None = None
        self.probabilities: np.ndarray | None = None
        if self.agent is not None:
            self._agent_state = self.agent.initial_state(1)
            self._think(observation)
            self.phase = "watch"
        else:
            self.phase = "look" if self.config.n_glimpses > 1 else "answer"

    @property
    def locations(self) -> np.ndarray:
        """Where the glimpses of this episode were taken (``n x 2``)."""
        return self.env.unwrapped.glimpse_locations

    def look_at(self, location: np.ndarray) -> None:
        """Take the next glimpse at ``location`` (a person's move)."""
        location = np.clip(np.asarray(location, dtype=np.float32), -1.0, 1.0)
        observation, *_ = self.env.step({"location": location, "prediction": np.zeros(NUM_CLASSES, np.float32)})
        self.glimpses.append(observation["glimpse"])
        self.cursor = location
        if len(self.glimpses) == self.config.n_glimpses:
            self.phase = "answer"

    def name_digit(self, digit: int) -> None:
        """Grade ``digit`` as the answer (a person's last move): the episode ends and is revealed."""
        scores = np.full(NUM_CLASSES, -10.0, dtype=np.float32)
        scores[digit] = 10.0
        self.answer = digit
        self._finish({"location": self.cursor, "prediction": scores})

    def _finish(self, action: dict[str, np.ndarray]) -> None:
        _, reward, terminated, _, info = self.env.step(action)
        assert terminated, "the grading step must end the episode"
        self.label = info["label"]
        self.score.played += 1
        self.score.right += int(self.answer == self.label)
        if self.opponent_episode is not None:  # revealed now, so counted now (not for a digit left unanswered)
            self.opponent_score.played += 1
            self.opponent_score.right += int(self.opponent_episode.answer == self.opponent_episode.label)
        self.phase = "reveal"

    def _play_opponent(self, seed: int, options: dict[str, Any]) -> AgentEpisode:
        """The opponent's whole episode on the digit that ``seed`` and ``options`` give (the env is reset after)."""
        *_, action = agent_episode(self.env, self.opponent, seed, options)  # the last action: the graded one
        env = self.env.unwrapped
        probabilities = softmax(action["prediction"])
        return AgentEpisode(env.canvas.copy(), env.glimpse_locations.copy(), probabilities,
                            int(np.argmax(probabilities)), env.outcome["label"])

    def _think(self, observation: dict[str, np.ndarray]) -> None:
        """Run the agent on the newest glimpse: its belief now, and where it will look next."""
        self._pending, self._agent_state = agent_step(self.agent, observation, self._agent_state)
        self.probabilities = softmax(self._pending["prediction"])
        self.answer = int(np.argmax(self._pending["prediction"]))
        self.cursor = np.clip(self._pending["location"], -1.0, 1.0)

    def advance(self) -> None:
        """The agent's next move: take the glimpse it chose, or, after the last one, grade its prediction."""
        if self.phase == "reveal":
            self.new_episode()
        elif self.phase == "watch":
            if len(self.glimpses) < self.config.n_glimpses:
                observation, *_ = self.env.step(self._pending)
                self.glimpses.append(observation["glimpse"])
                self._think(observation)
            else:
                self._finish(self._pending)

    # ------------------------------------------------------------------ input
    def handle_event(self, event: pygame.event.Event) -> None:
        """React to one pygame event (anything meaningless in the current phase is ignored)."""
        if event.type == pygame.QUIT or (event.type == pygame.KEYDOWN and event.key in QUIT_KEYS):
            self.running = False
        elif event.type == pygame.KEYDOWN:
            self._handle_key(event.key)
        elif event.type == pygame.MOUSEMOTION and self.phase == "look" and self._on_canvas(event.pos):
            self.cursor = self.layout.canvas.location_at(event.pos)
        elif event.type == pygame.MOUSEBUTTONDOWN and event.button == 1 and self.phase == "look":
            if self._on_canvas(event.pos):
                self.look_at(self.layout.canvas.location_at(event.pos))

    def _on_canvas(self, position: tuple[int, int]) -> bool:
        return self.layout.canvas_panel.collidepoint(position)

    def _handle_key(self, key: int) -> None:
        if self.agent is not None:
            if key in ADVANCE_KEYS or (key == pygame.K_n and self.phase == "reveal"):
                self.advance()
            elif key == pygame.K_a:
                self.autoplay = not self.autoplay
        elif self.phase == "look":
            if key in ARROW_KEYS:
                step = self.config.glimpse_size / self.config.size  # half a glimpse, in location units
                self.cursor = np.clip(self.cursor + step * np.asarray(ARROW_KEYS[key]), -1.0, 1.0).astype(np.float32)
            elif key in ADVANCE_KEYS:
                self.look_at(self.cursor)
        elif self.phase == "answer" and key in DIGIT_KEYS:
            self.name_digit(DIGIT_KEYS[key])
        elif self.phase == "reveal" and key == pygame.K_n:
            self.new_episode()

    def update(self, now: float | None = None) -> None:
        """Advance an autoplaying agent when its time has come (``now`` in seconds, default the clock)."""
        if self.agent is None or not self.autoplay:
            return
        now = time.monotonic() if now is None else now
        wait = self.step_seconds * (2 if self.phase == "reveal" else 1)
        if now - self._last_advance >= wait:
            self._last_advance = now
            self.advance()

    # ------------------------------------------------------------------ output
    def score_text(self) -> str:
        """The score so far: the person's or the agent's, or both against each other."""
        return str(self.score) if self.opponent is None else f"you {self.score}, agent {self.opponent_score}"

    def prompt(self) -> str:
        """What to do now, and the score."""
        left = self.config.n_glimpses - len(self.glimpses)
        if self.phase == "look":
            text = f"where next? {left} glimpse{'s' if left > 1 else ''} left"
        elif self.phase == "answer":
            text = "which digit is it? press 0-9"
        elif self.phase == "watch":
            text = "the agent will look at the white cross next" if left else "the agent will answer next"
            text += "   (autoplay)" if self.autoplay else ""
        else:
            verdict = "right!" if self.answer == self.label else "wrong."
            who = "you" if self.agent is None else "the agent"
            text = f"it was a {self.label}: {who} said {self.answer}, {verdict}   n: next digit"
        return f"score {self.score_text()}   |   {text}"

    def opponent_note(self) -> str:
        """The opponent's part of the window: what it did, once the person has answered."""
        episode = self.opponent_episode
        if self.phase != "reveal" or episode is None:
            return "the agent has played this digit too: its path and answer show once you have named it"
        verdict = "right" if episode.answer == episode.label else "wrong"
        confidence = episode.probabilities[episode.answer]
        return f"the agent (magenta path) said {episode.answer} ({confidence:.0%}): {verdict}"

    def notes(self) -> tuple[str, ...]:
        """The text lines under the status: the prompt, the opponent's note (if any), the keys."""
        keys = AGENT_KEYS if self.agent is not None else HUMAN_KEYS
        return (self.prompt(), keys) if self.opponent is None else (self.prompt(), self.opponent_note(), keys)

    def view(self) -> FrameView:
        """What the window shows now."""
        env = self.env.unwrapped
        revealed = self.phase == "reveal"
        rival = self.opponent_episode if revealed and self.opponent is not None else None
        if revealed or self.agent is not None:
            canvas, unseen = env.canvas, None
        else:  # the canvas stays hidden: show only what the retina has delivered, where it delivered it
            size, boxes = self.config.size, self.layout.canvas.boxes(self.locations)
            picture, seen = paint_glimpses(size, size, np.stack(self.glimpses), boxes)
            canvas, unseen = picture, ~seen
        return FrameView(
            config=self.config,
            canvas=canvas,
            locations=self.locations,
            glimpse=self.glimpses[-1],
            unseen=unseen,
            probabilities=self.probabilities if rival is None else rival.probabilities,
            prediction=self.answer,
            label=self.label,
            next_location=self.cursor if self.phase in ("look", "watch") else None,
            notes=self.notes(),
            other_locations=None if rival is None else rival.locations,
            bars_caption="class probabilities" if rival is None else "the agent's class probabilities",
        )

    def draw(self) -> pygame.Surface:
        """The window's picture now."""
        return draw_frame(self.view(), self.layout)
