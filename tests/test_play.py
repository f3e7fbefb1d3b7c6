"""The play window's event loop, driven by synthetic pygame events under the dummy video driver."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pygame
import pytest
import torch
from PIL import Image

import glimpse_env  # noqa: F401  (registers GlimpseMNIST-v0)
from agents import RAMConfig, RecurrentAttentionModel, evaluate, figures, load_agent, save_agent
from agents.figures.cli import parse_visualize_args, visualize_main
from glimpse_env.canvas import evaluation_layouts
from glimpse_env.drawing import AGENT_PATH_COLOUR, UNSEEN_COLOUR, surface_to_array
from glimpse_env.play import PlayLoop, build_loop, main, parse_args
from glimpse_env.retina import glimpse_boxes, location_to_pixel

TASK = dict(size=28, scales=1, glimpse_size=8, n_glimpses=4, first_location="center")


@pytest.fixture
def events():
    """Posts synthetic events to pygame's queue (under the dummy driver) and feeds them to a loop."""
    pygame.display.init()
    pygame.display.set_mode((8, 8))
    pygame.event.clear()

    def feed(loop: PlayLoop, *posted: pygame.event.Event) -> None:
        for event in posted:
            pygame.event.post(event)
        for event in pygame.event.get():
            loop.handle_event(event)

    yield feed
    pygame.display.quit()


def key(name: int) -> pygame.event.Event:
    return pygame.event.Event(pygame.KEYDOWN, key=name, mod=0, unicode="", scancode=0)


def click(loop: PlayLoop, location, button: int = 1) -> pygame.event.Event:
    return pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=loop.layout.canvas.point(np.asarray(location)), button=button)


def grid_points(locations) -> np.ndarray:
    return location_to_pixel(torch.as_tensor(np.asarray(locations, np.float32)), TASK["size"], TASK["size"]).numpy()


def human_loop(digits) -> PlayLoop:
    return PlayLoop(gym.make("GlimpseMNIST-v0", split="test", digits=digits, **TASK), seed=0)


def test_a_person_plays_an_episode_with_clicks_and_is_graded(tiny_digits, events):
    loop = human_loop(tiny_digits)
    loop.new_episode(index=5)
    label = int(tiny_digits.labels[5])
    chosen = [(-0.5, -0.25), (0.25, 0.5), (0.5, -0.5)]
    events(loop, click(loop, chosen[0]), click(loop, chosen[1]))
    assert loop.phase == "look" and len(loop.glimpses) == 3
    events(loop, click(loop, chosen[2]))
    assert loop.phase == "answer"
    np.testing.assert_array_equal(grid_points(loop.locations), grid_points([(0.0, 0.0), *chosen]))
    events(loop, key(pygame.K_0 + label))
    assert loop.phase == "reveal" and loop.label == label and loop.answer == label
    assert (loop.score.right, loop.score.played) == (1, 1)

    events(loop, key(pygame.K_n))  # the next digit, answered wrongly with the arrow keys and space
    assert loop.phase == "look" and len(loop.glimpses) == 1 and loop.label is None
    loop.new_episode(index=6)  # a known digit
    events(loop, key(pygame.K_RIGHT), key(pygame.K_RIGHT), key(pygame.K_DOWN), key(pygame.K_SPACE))
    step = TASK["glimpse_size"] / TASK["size"]
    np.testing.assert_allclose(loop.locations[1], (2 * step, step), atol=1e-6)
    events(loop, key(pygame.K_SPACE), key(pygame.K_UP), key(pygame.K_SPACE))
    np.testing.assert_allclose(loop.locations[3], (2 * step, 0.0), atol=1e-6)
    assert loop.phase == "answer"
    wrong = (int(tiny_digits.labels[6]) + 1) % 10
    events(loop, key(getattr(pygame, f"K_KP{wrong}")))  # the keypad works too
    assert loop.phase == "reveal" and loop.answer == wrong and loop.answer != loop.label
    assert (loop.score.right, loop.score.played) == (1, 2)
    assert "1/2" in loop.prompt()


def test_keys_and_clicks_that_mean_nothing_now_are_ignored(tiny_digits, events):
    loop = human_loop(tiny_digits)

    def snapshot():
        return loop.phase, len(loop.glimpses), loop.score.played, loop.answer

    before = snapshot()
    events(loop, key(pygame.K_7), key(pygame.K_x), key(pygame.K_n), key(pygame.K_F1))  # no answering yet
    events(loop, click(loop, (0.2, 0.2), button=3))  # right click
    events(loop, pygame.event.Event(pygame.MOUSEBUTTONDOWN, pos=(loop.layout.width - 2, 2), button=1))  # off canvas
    assert snapshot() == before and loop.running

    for location in [(0.1, 0.1), (0.2, 0.2), (0.3, 0.3)]:
        events(loop, click(loop, location))
    before = snapshot()
    assert before[0] == "answer"
    events(loop, click(loop, (0.5, 0.5)), key(pygame.K_SPACE), key(pygame.K_LEFT), key(pygame.K_n), key(pygame.K_a))
    assert snapshot() == before and len(loop.locations) == TASK["n_glimpses"]

    events(loop, key(pygame.K_3))
    before = snapshot()
    events(loop, key(pygame.K_4), click(loop, (0.0, 0.0)), key(pygame.K_SPACE))  # revealed: only n goes on
    assert snapshot() == before and loop.phase == "reveal"


@pytest.mark.parametrize("quit_event", [key(pygame.K_q), key(pygame.K_ESCAPE), pygame.event.Event(pygame.QUIT)])
def test_quit(tiny_digits, events, quit_event):
    loop = human_loop(tiny_digits)
    events(loop, quit_event)
    assert not loop.running


def test_the_canvas_stays_hidden_until_the_reveal(tiny_digits, events):
    loop = human_loop(tiny_digits)
    loop.new_episode(index=9)
    (ox, oy), zoom = loop.layout.canvas.origin, loop.layout.canvas.zoom
    corner = (oy + zoom // 2, ox + zoom // 2)  # canvas pixel (0, 0): far from the centre glimpse
    hidden = surface_to_array(loop.draw())
    assert loop.draw().get_size() == loop.layout.size
    assert tuple(hidden[corner]) == UNSEEN_COLOUR
    events(loop, *(click(loop, (0.0, 0.0)) for _ in range(3)), key(pygame.K_1))
    revealed = surface_to_array(loop.draw())
    assert tuple(revealed[corner]) == (0, 0, 0)  # MNIST corners are black


def make_checkpoint(path: Path, learned_first: tuple[float, float] | None = None, **env_kwargs) -> Path:
    """A small untrained agent for the task ``env_kwargs``; with ``learned_first``, one that learned to put its
    first glimpse there."""
    torch.manual_seed(0)
    config = RAMConfig(scales=env_kwargs["scales"], glimpse_size=env_kwargs["glimpse_size"], what_hidden=16,
                       where_hidden=16, glimpse_out=32, core_size=32, learn_first_location=learned_first is not None)
    model = RecurrentAttentionModel(config)
    if learned_first is not None:
        with torch.no_grad():
            model.first_location_logit.copy_(torch.atanh(torch.tensor(learned_first)))
    save_agent(path, model, env_kwargs)
    return path


def test_watching_an_agent_step_by_step(tiny_digits, events, tmp_path):
    task = dict(size=60, scales=2, glimpse_size=12, n_glimpses=3, clutter=2)
    checkpoint = make_checkpoint(tmp_path / "agent.pt", **task)
    loop = build_loop(parse_args(["--agent", str(checkpoint), "--seed", "0", "--size", "28"]), digits=tiny_digits)
    config = loop.env.unwrapped.config
    assert (config.size, config.scales, config.glimpse_size, config.n_glimpses, config.clutter) == tuple(task.values())
    assert loop.phase == "watch" and loop.probabilities.sum() == pytest.approx(1.0)
    for glimpses in range(2, task["n_glimpses"] + 1):
        planned = loop.cursor.copy()
        events(loop, key(pygame.K_SPACE))
        assert len(loop.glimpses) == glimpses
        np.testing.assert_allclose(loop.locations[-1], planned)  # it looked where the cross said
    events(loop, key(pygame.K_7))  # digits mean nothing when watching
    assert loop.phase == "watch"
    events(loop, key(pygame.K_SPACE))
    assert loop.phase == "reveal" and loop.score.played == 1 and loop.label is not None
    assert surface_to_array(loop.draw()).shape == (loop.layout.height, loop.layout.width, 3)
    events(loop, key(pygame.K_n))
    assert loop.phase == "watch" and len(loop.glimpses) == 1


def test_autoplay_advances_on_its_own_pace(tiny_digits, tmp_path):
    checkpoint = make_checkpoint(tmp_path / "agent.pt", size=28, scales=1, glimpse_size=8, n_glimpses=2)
    args = parse_args(["--agent", str(checkpoint), "--autoplay", "--step-seconds", "1"])
    loop = build_loop(args, digits=tiny_digits)
    loop.update(now=100.0)
    assert len(loop.glimpses) == 2
    loop.update(now=100.5)  # too early
    assert loop.phase == "watch"
    loop.update(now=101.0)
    assert loop.phase == "reveal"
    loop.update(now=102.5)  # the answer stays up for two steps
    assert loop.phase == "reveal"
    loop.update(now=103.0)
    assert loop.phase == "watch" and len(loop.glimpses) == 1


def test_main_opens_the_window_and_quits(tiny_digits, events, capsys):
    pygame.event.post(pygame.event.Event(pygame.QUIT))
    assert main(["--n-glimpses", "2", "--seed", "0"], digits=tiny_digits) == 0
    assert "score: 0/0" in capsys.readouterr().out


def test_visualize_draws_the_figures(tiny_digits, tmp_path):
    task = dict(size=60, scales=2, glimpse_size=12, n_glimpses=3, clutter=2)
    checkpoint = make_checkpoint(tmp_path / "agent.pt", **task)
    written = visualize_main([str(checkpoint), "--out", str(tmp_path / "out"), "--rows", "2", "--play-window",
                              "--versus-window"], digits=tiny_digits)
    grid = Image.open(written["glimpses"])
    assert grid.size[0] > grid.size[1] > 200
    gif = Image.open(written["episode"])
    assert gif.n_frames == task["n_glimpses"] + 1
    assert Image.open(written["play_window"]).size == tuple(
        build_loop(parse_args(["--n-glimpses", "3", "--size", "60", "--scales", "2", "--glimpse-size", "12"]),
                   digits=tiny_digits).layout.size
    )
    # The --versus window after the person answered: its size, the canvas revealed and the agent's path on it
    assert written["versus_window"].name == "agent-versus-window.png"
    versus = np.asarray(Image.open(written["versus_window"]).convert("RGB"))
    size = build_loop(parse_args(["--versus", str(checkpoint)]), digits=tiny_digits).layout.size
    assert (versus.shape[1], versus.shape[0]) == size
    assert len(np.unique(versus.reshape(-1, 3), axis=0)) > 20  # a picture, not a blank
    assert has_colour(versus, AGENT_PATH_COLOUR) and not has_colour(versus, UNSEEN_COLOUR)


def test_heatmap_census_of_where_the_agent_looks(tiny_digits, tmp_path):
    task = dict(size=60, scales=2, glimpse_size=12, n_glimpses=3, clutter=0, first_location="center")
    loaded = load_agent(make_checkpoint(tmp_path / "agent.pt", **task))
    census = figures.glimpse_census(loaded.model, loaded.env_kwargs, 300, digits=tiny_digits, slots=128)
    assert census.locations.shape == (300, 3, 2) and census.on_digit.shape == (300, 3)  # 3 batches, one padded
    offsets = evaluation_layouts(300, 60, 0, torch.device("cpu")).digit_offset.numpy()
    np.testing.assert_array_equal(census.digit_centres, offsets + 14)  # the fixed test canvases' digits
    np.testing.assert_allclose(census.locations[:, 0], 0.0)  # the env's first glimpse: the centre

    # "on the digit", checked on the canvas itself: without clutter its nonzero pixels are the digit's ink
    env = gym.make("GlimpseMNIST-v0", split="test", digits=tiny_digits, **task)
    for index in range(0, 300, 7):
        env.reset(options={"index": index})
        ys, xs = np.nonzero(env.unwrapped.canvas)
        ink = np.zeros((60, 60), bool)
        ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
        boxes = glimpse_boxes(torch.as_tensor(census.locations[index]), 60, 60, 12, 2)[:, 0].clamp(0, 60)
        for step, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
            assert census.on_digit[index, step] == ink[y0:y1, x0:x1].any(), (index, step)
    assert 0.0 < census.on_digit_by_chance < 1.0
    vector = gym.make_vec("GlimpseMNIST-v0", num_envs=100, split="test", digits=tiny_digits, **task)
    assert census.error == evaluate(loaded.model, vector, 300)["error"]

    figure = figures.draw_heatmap(census)
    densities = [axes.images[0].get_array() for axes in figure.axes if axes.images]
    assert len(densities) == 2 * task["n_glimpses"]  # a row per glimpse: on the canvas, relative to the digit
    for density in densities:  # every glimpse lands in its panel: each panel's cells sum to one
        assert float(density.sum()) == pytest.approx(1.0)
    np.testing.assert_allclose(figure.axes[0].get_lines()[0].get_ydata(), 100 * census.on_digit.mean(0))

    written = visualize_main([str(tmp_path / "agent.pt"), "--heatmap", "--num-images", "40", "--out",
                              str(tmp_path / "out")], digits=tiny_digits)
    assert set(written) == {"heatmap"} and written["heatmap"].name == "agent-heatmap.png"
    width, height = Image.open(written["heatmap"]).size
    assert height > 1.5 * width > 1200  # a tall figure: a row of panels per glimpse
    with pytest.raises(SystemExit):
        parse_visualize_args([str(tmp_path / "agent.pt"), "--heatmap", "--video"])


def test_heatmap_on_the_validation_split(tiny_digits, tmp_path):
    task = dict(size=60, scales=2, glimpse_size=12, n_glimpses=3, clutter=2)
    checkpoint = make_checkpoint(tmp_path / "agent.pt", **task)
    loaded = load_agent(checkpoint)
    census = figures.glimpse_census(loaded.model, loaded.env_kwargs, 50, split="validation", digits=tiny_digits)
    assert census.split == "validation" and census.locations.shape == (50, 3, 2)
    offsets = evaluation_layouts(300, 60, 2, torch.device("cpu")).digit_offset[:50].numpy()
    np.testing.assert_array_equal(census.digit_centres, offsets + 14)  # an evaluation split: fixed canvases
    vector = gym.make_vec("GlimpseMNIST-v0", num_envs=50, split="validation", digits=tiny_digits, **task)
    assert census.error == evaluate(loaded.model, vector, 50)["error"]
    assert "50 validation digits" in figures.draw_heatmap(census).get_suptitle()
    drawn = figures.glimpse_census(loaded.model, loaded.env_kwargs, 50, split="train", digits=tiny_digits)
    assert not np.array_equal(drawn.digit_centres, census.digit_centres)  # the split reaches the env: fresh canvases

    written = visualize_main([str(checkpoint), "--heatmap", "--num-images", "20", "--split", "validation", "--out",
                              str(tmp_path)], digits=tiny_digits)
    assert Image.open(written["heatmap"]).size[1] > 1200
    with pytest.raises(SystemExit):
        parse_visualize_args([str(checkpoint), "--heatmap", "--versus-window"])


def test_video_of_the_gif_episode(tiny_digits, tmp_path):
    pytest.importorskip("moviepy")
    from moviepy.video.io.VideoFileClip import VideoFileClip

    checkpoint = make_checkpoint(tmp_path / "agent.pt", **TASK)
    written = visualize_main([str(checkpoint), "--out", str(tmp_path), "--rows", "1", "--video"], digits=tiny_digits)
    assert written["video"].name == "agent-episode.mp4"
    gif = Image.open(written["episode"])
    frames = []
    for number in range(gif.n_frames):
        gif.seek(number)
        frames.append(np.asarray(gif.convert("RGB"), dtype=np.float64))
    clip = VideoFileClip(str(written["video"]))
    try:
        assert tuple(clip.size) == gif.size
        starts = np.cumsum([0, *figures.frame_durations(len(frames))]) / 1000  # the GIF's pace, in seconds
        assert clip.duration == pytest.approx(starts[-1], abs=0.15)
        for number in range(len(frames)):
            shown = clip.get_frame(starts[number] + 0.3).astype(np.float64)
            differences = [np.abs(shown - frame).mean() for frame in frames]
            assert np.argmin(differences) == number and differences[number] < 6  # that frame, at that time
    finally:
        clip.close()


def has_colour(frame: np.ndarray, colour) -> bool:
    return bool((frame == np.asarray(colour, np.uint8)).all(-1).any())


def test_a_person_against_the_agent_on_the_same_canvases(tiny_digits, events, tmp_path):
    task = dict(size=60, scales=2, glimpse_size=12, n_glimpses=3, clutter=2)
    checkpoint = make_checkpoint(tmp_path / "agent.pt", **task)
    # The training split draws a fresh canvas (translation, distractors) and first glimpse every episode.
    loop = build_loop(parse_args(["--versus", str(checkpoint), "--seed", "3", "--split", "train"]), digits=tiny_digits)
    assert loop.agent is None and loop.opponent is not None
    canvases, agent_right = [], 0
    for answer_right in (True, False):
        rival = loop.opponent_episode
        assert loop.phase == "look" and len(loop.glimpses) == 1
        np.testing.assert_array_equal(rival.canvas, loop.env.unwrapped.canvas)  # the same canvas
        np.testing.assert_array_equal(rival.locations[0], loop.locations[0])  # and the same first glimpse
        assert len(rival.locations) == task["n_glimpses"] and rival.probabilities.sum() == pytest.approx(1.0)
        hidden = surface_to_array(loop.draw())
        assert has_colour(hidden, UNSEEN_COLOUR) and not has_colour(hidden, AGENT_PATH_COLOUR)  # nothing given away
        canvases.append(rival.canvas)

        events(loop, click(loop, (0.3, -0.2)), click(loop, (-0.4, 0.1)))
        assert loop.phase == "answer"
        label = rival.label
        events(loop, key(pygame.K_0 + (label if answer_right else (label + 1) % 10)))
        assert loop.phase == "reveal" and loop.label == label
        revealed = surface_to_array(loop.draw())
        assert has_colour(revealed, AGENT_PATH_COLOUR) and not has_colour(revealed, UNSEEN_COLOUR)
        view = loop.view()
        np.testing.assert_array_equal(view.other_locations, rival.locations)
        np.testing.assert_array_equal(view.probabilities, rival.probabilities)
        assert view.prediction == loop.answer  # the status grades the person; the bars are the agent's
        assert f"said {rival.answer}" in loop.opponent_note()
        agent_right += int(rival.answer == label)
        assert (loop.opponent_score.right, loop.opponent_score.played) == (agent_right, len(canvases))
        events(loop, key(pygame.K_n))

    assert (loop.score.right, loop.score.played) == (1, 2)
    assert f"you 1/2 right (50%), agent {agent_right}/2 right" in loop.prompt()
    assert not np.array_equal(canvases[0], canvases[1])  # fresh canvases, each shared by both players
    events(loop, click(loop, (0.0, 0.0)), key(pygame.K_q))  # an unanswered digit does not count for the agent
    assert loop.opponent_score.played == 2 and not loop.running


def test_an_agent_that_learned_its_first_glimpse_takes_it_there(tiny_digits, tmp_path):
    checkpoint = make_checkpoint(tmp_path / "agent.pt", learned_first=(0.5, -0.25), size=28, scales=1,
                                 glimpse_size=8, n_glimpses=2, first_location="center")
    loop = build_loop(parse_args(["--versus", str(checkpoint), "--seed", "0"]), digits=tiny_digits)
    np.testing.assert_allclose(loop.opponent_episode.locations[0], (0.5, -0.25), atol=1e-6)  # its own
    np.testing.assert_allclose(loop.locations[0], (0.0, 0.0))  # the person's: the env's (the centre here)
    np.testing.assert_array_equal(loop.opponent_episode.canvas, loop.env.unwrapped.canvas)


def test_main_prints_both_scores_on_exit(tiny_digits, events, tmp_path, capsys):
    checkpoint = make_checkpoint(tmp_path / "agent.pt", **TASK)
    argv = ["--versus", str(checkpoint), "--seed", "5"]
    rival = build_loop(parse_args(argv), digits=tiny_digits).opponent_episode  # the digit main will show first
    agent_right = int(rival.answer == rival.label)
    for _ in range(TASK["n_glimpses"] - 1):  # look where the cursor is, then name the digit right, then quit
        pygame.event.post(key(pygame.K_SPACE))
    pygame.event.post(key(pygame.K_0 + rival.label))
    pygame.event.post(pygame.event.Event(pygame.QUIT))
    assert main(argv, digits=tiny_digits) == 0
    assert f"score: you 1/1 right (100%), agent {agent_right}/1 right" in capsys.readouterr().out


def test_agent_and_versus_exclude_each_other(tmp_path):
    checkpoint = str(make_checkpoint(tmp_path / "agent.pt", **TASK))
    with pytest.raises(SystemExit):
        parse_args(["--agent", checkpoint, "--versus", checkpoint])
