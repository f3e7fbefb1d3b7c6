"""Rendering of GlimpseMNIST-v0: frames, where the boxes land, the glimpse panels, the human window."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pygame
import pytest
import torch

import glimpse_env  # noqa: F401  (registers GlimpseMNIST-v0)
from glimpse_env.drawing import BOX_WIDTH, UNSEEN_COLOUR, scale_colour, surface_to_array
from glimpse_env.pixels import foveated_image, paint_glimpses, to_uint8
from glimpse_env.render import FrameView, draw_frame, episode_view, frame_layout
from glimpse_env.retina import glimpse_boxes

MNIST_28 = dict(size=28, scales=1, glimpse_size=8, n_glimpses=4)
CLUTTERED_60 = dict(size=60, scales=3, glimpse_size=12, n_glimpses=3, clutter=4)


def make_env(digits, render_mode="rgb_array", **kwargs) -> gym.Env:
    return gym.make("GlimpseMNIST-v0", render_mode=render_mode, split="test", digits=digits, **kwargs)


def action(location, prediction=None) -> dict[str, np.ndarray]:
    scores = np.zeros(10, np.float32) if prediction is None else np.asarray(prediction, np.float32)
    return {"location": np.asarray(location, np.float32), "prediction": scores}


def play(env, locations, seed=0) -> list[np.ndarray]:
    """Frames after reset and after every step of an episode that looks at ``locations`` in turn."""
    env.reset(seed=seed, options={"index": 7})
    frames = [env.render()]
    for location in locations:
        env.step(action(location))
        frames.append(env.render())
    return frames


@pytest.mark.parametrize("kwargs", [MNIST_28, CLUTTERED_60], ids=["mnist28", "cluttered60"])
def test_frames_are_rgb_uint8_of_one_size_and_not_empty(tiny_digits, kwargs):
    env = make_env(tiny_digits, **kwargs)
    steps = kwargs["n_glimpses"]
    frames = play(env, [(0.3 * i - 0.4, 0.2) for i in range(steps)])
    layout = frame_layout(env.unwrapped.config)
    assert len(frames) == steps + 1
    for frame in frames:
        assert frame.dtype == np.uint8 and frame.shape == (layout.height, layout.width, 3)
        assert frame.shape[0] % 2 == 0 and frame.shape[1] % 2 == 0  # video encoders want even sides
        packed = frame[..., 0].astype(np.int32) << 16 | frame[..., 1].astype(np.int32) << 8 | frame[..., 2]
        assert frame.std() > 10 and len(np.unique(packed)) > 20  # many colours: canvas, boxes, text
    assert not np.array_equal(frames[0], frames[1])  # the picture follows the episode
    env.close()


def box_pixels(layout, box) -> tuple[int, int, int, int]:
    """Frame pixel bounds (left, top, right, bottom; end exclusive) of a canvas-pixel box, computed by hand."""
    zoom, (ox, oy) = layout.canvas.zoom, layout.canvas.origin
    x0, y0, x1, y1 = box
    return ox + x0 * zoom, oy + y0 * zoom, ox + x1 * zoom, oy + y1 * zoom


def assert_box_drawn(frame, layout, box, colour) -> None:
    left, top, right, bottom = box_pixels(layout, box)
    middle_y, middle_x = (top + bottom) // 2, (left + right) // 2
    for y, x in [(middle_y, left), (middle_y, left + BOX_WIDTH - 1), (middle_y, right - 1), (top, middle_x + 3),
                 (bottom - 1, middle_x + 3), (top, left), (bottom - 1, right - 1)]:
        assert tuple(frame[y, x]) == colour, (y, x, frame[y, x], colour)
    for y, x in [(middle_y, left - 1), (middle_y, right), (top - 1, middle_x + 3), (bottom, middle_x + 3)]:
        assert tuple(frame[y, x]) != colour, (y, x)  # the line lies on the box's own pixels, not beside them


def test_centre_glimpse_boxes_are_drawn_on_the_pixels_the_retina_reads(tiny_digits):
    env = make_env(tiny_digits, size=28, scales=2, glimpse_size=8, n_glimpses=2, first_location="center")
    env.reset(seed=0, options={"index": 3})
    frame = env.render()
    layout = frame_layout(env.unwrapped.config)
    # location (0, 0) of a 28x28 canvas is the pixel corner (14, 14): the 8 px scale covers 10..17, the 16 px 6..21
    assert_box_drawn(frame, layout, (10, 10, 18, 18), scale_colour(0))
    assert_box_drawn(frame, layout, (6, 6, 22, 22), scale_colour(1))
    boxes = glimpse_boxes(torch.zeros(1, 2), 28, 28, 8, 2)[0].tolist()  # the one geometry agrees
    assert boxes == [[10, 10, 18, 18], [6, 6, 22, 22]]
    env.close()


def test_box_of_a_chosen_location_follows_the_step(tiny_digits):
    env = make_env(tiny_digits, size=60, scales=1, glimpse_size=12, n_glimpses=3, first_location="center")
    env.reset(seed=0, options={"index": 3})
    env.step(action((0.5, -0.25)))
    frame = env.render()
    layout = frame_layout(env.unwrapped.config)
    cx, cy = math.floor(1.5 / 2 * 60 + 0.5), math.floor(0.75 / 2 * 60 + 0.5)  # retina.py's location -> pixel
    assert_box_drawn(frame, layout, (cx - 6, cy - 6, cx + 6, cy + 6), scale_colour(0))
    old_left, old_top, _, _ = box_pixels(layout, (24, 24, 36, 36))  # the centre glimpse is no longer boxed
    assert tuple(frame[old_top + 20, old_left]) != scale_colour(0)
    env.close()


def test_glimpse_panels_are_the_observation_magnified(tiny_digits):
    env = make_env(tiny_digits, **CLUTTERED_60)
    env.reset(seed=1, options={"index": 11})
    observation, *_ = env.step(action((0.1, -0.2)))
    frame = env.render()
    layout = frame_layout(env.unwrapped.config)
    zoom = layout.glimpse_zoom
    assert zoom > 1
    for scale, rect in enumerate(layout.glimpse_rects):
        panel = frame[rect.top : rect.bottom, rect.left : rect.right]
        expected = np.kron(to_uint8(observation["glimpse"][scale]), np.ones((zoom, zoom), np.uint8))
        for channel in range(3):
            np.testing.assert_array_equal(panel[..., channel], expected)
        # one frame pixel per magnified observation pixel reads back the observation to within rounding
        np.testing.assert_allclose(panel[::zoom, ::zoom, 0] / 255.0, observation["glimpse"][scale], atol=0.5 / 255)
    env.close()


def test_canvas_panel_shows_the_canvas(tiny_digits):
    env = make_env(tiny_digits, size=28, scales=1, glimpse_size=8, n_glimpses=2, first_location="center")
    env.reset(seed=0, options={"index": 0})
    frame = env.render()
    layout = frame_layout(env.unwrapped.config)
    zoom, (ox, oy) = layout.canvas.zoom, layout.canvas.origin
    shown = frame[oy + zoom // 2 : oy + 28 * zoom : zoom, ox + zoom // 2 : ox + 28 * zoom : zoom, 0]
    canvas = env.unwrapped.canvas
    assert np.mean(shown == canvas) > 0.95  # all but the few pixels under the boxes and the path marker
    env.close()


def test_status_follows_the_prediction_and_the_outcome(tiny_digits):
    env = make_env(tiny_digits, **MNIST_28)
    env.reset(seed=0, options={"index": 4})
    label = int(tiny_digits.labels[4])
    assert episode_view(env).prediction is None and episode_view(env).label is None
    scores = np.full(10, -5.0)
    scores[label] = 5.0
    for _ in range(MNIST_28["n_glimpses"]):
        *_, terminated, _, info = env.step(action((0.0, 0.0), scores))
    assert terminated and info["label"] == label
    view = episode_view(env)
    assert view.label == view.prediction == label
    assert view.probabilities.sum() == pytest.approx(1.0) and view.probabilities.argmax() == label
    env.close()


def test_frames_collect_for_video(tiny_digits):
    env = gym.wrappers.RenderCollection(make_env(tiny_digits, **MNIST_28))
    env.reset(seed=0)
    for _ in range(MNIST_28["n_glimpses"]):
        env.step(action((0.2, 0.2)))
    frames = env.render()
    assert len(frames) == MNIST_28["n_glimpses"] + 1  # reset and every step
    assert len({frame.shape for frame in frames}) == 1
    env.close()


def test_record_video_writes_a_file(tiny_digits, tmp_path):
    pytest.importorskip("moviepy")
    env = gym.wrappers.RecordVideo(make_env(tiny_digits, **MNIST_28), str(tmp_path), disable_logger=True)
    env.reset(seed=0)
    terminated = False
    while not terminated:
        *_, terminated, _, _ = env.step(action((0.2, 0.2)))
    env.close()
    assert list(tmp_path.glob("*.mp4"))


def test_render_needs_reset_and_a_mode(tiny_digits):
    env = make_env(tiny_digits, **MNIST_28).unwrapped
    with pytest.raises(RuntimeError, match="reset"):
        env.render()
    quiet = make_env(tiny_digits, render_mode=None, **MNIST_28)
    quiet.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert quiet.render() is None


def test_human_mode_opens_and_closes_a_window(tiny_digits):
    env = make_env(tiny_digits, render_mode="human", size=28, scales=1, glimpse_size=8, n_glimpses=2)
    env.unwrapped.metadata = {**env.unwrapped.metadata, "render_fps": 1000}  # do not sleep in a test
    env.reset(seed=0)
    screen = pygame.display.get_surface()
    assert screen is not None and screen.get_size() == frame_layout(env.unwrapped.config).size
    assert env.render() is None
    env.step(action((0.0, 0.0)))
    shown = surface_to_array(screen)
    assert shown.std() > 10
    env.close()
    assert not pygame.display.get_init()


def test_painted_glimpses_are_the_canvas_where_seen(tiny_digits):
    env = make_env(tiny_digits, size=28, scales=1, glimpse_size=8, n_glimpses=3, first_location="center")
    observation, _ = env.reset(seed=0, options={"index": 2})
    glimpses, locations = [observation["glimpse"]], [observation["location"]]
    for location in [(-0.5, -0.5), (0.6, 0.4)]:
        observation, *_ = env.step(action(location))
        glimpses.append(observation["glimpse"])
        locations.append(observation["location"])
    boxes = glimpse_boxes(torch.as_tensor(np.stack(locations)), 28, 28, 8, 1).numpy()
    picture, seen = paint_glimpses(28, 28, np.stack(glimpses), boxes)
    canvas = env.unwrapped.canvas / 255.0
    np.testing.assert_allclose(picture[seen], canvas[seen], atol=1e-6)  # the finest scale is the canvas itself
    assert 2 * 64 < seen.sum() <= 3 * 64 and not seen.all()
    env.close()


def test_foveated_image_nests_the_scales():
    from glimpse_env.config import GlimpseConfig

    config = GlimpseConfig(size=60, scales=2, glimpse_size=4)
    glimpse = np.stack([np.full((4, 4), 0.25), np.arange(16).reshape(4, 4) / 16.0]).astype(np.float32)
    picture = foveated_image(glimpse, config)
    assert picture.shape == (8, 8)
    np.testing.assert_array_equal(picture[2:6, 2:6], 0.25)  # the fine scale in the middle
    assert picture[0, 0] == 0.0 and picture[7, 7] == glimpse[1, 3, 3]  # the coarse one magnified around it


def test_hidden_canvas_paints_unseen_pixels(tiny_digits):
    env = make_env(tiny_digits, **MNIST_28, first_location="center")
    env.reset(seed=0)
    unwrapped = env.unwrapped
    unseen = np.ones((28, 28), bool)
    unseen[:5, :5] = False
    view = FrameView(unwrapped.config, unwrapped.canvas, unwrapped.glimpse_locations, unwrapped.last_glimpse, unseen)
    frame = surface_to_array(draw_frame(view))
    layout = frame_layout(unwrapped.config)
    ox, oy = layout.canvas.origin
    zoom = layout.canvas.zoom
    assert tuple(frame[oy + 27 * zoom + 1, ox + 27 * zoom + 1]) == UNSEEN_COLOUR
    assert tuple(frame[oy + 1, ox + 1]) == (0, 0, 0)  # a seen corner shows the canvas (black there)
    env.close()
