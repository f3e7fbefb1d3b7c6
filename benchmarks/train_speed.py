"""Training throughput of the RAM agent on GlimpseMNIST-v0: sampled episodes per second and seconds per epoch.

    python benchmarks/train_speed.py                 # CPU (and CUDA when present)
    python benchmarks/train_speed.py --device cuda

For each preset (28x28 / 6 glimpses of 8x8, and 60x60 / 4 glimpses of 12x12 x 3 scales; 128 images x M=10 slots)
it times full training steps (rollout through the batched env, hybrid loss, backward, Adam) in float32 and in
bf16 autocast, and splits one step's time into env (retina and reset), model forward, backward and optimizer.
The comparator, run in the same process: the same step with the retina computed image by image in a Python loop
(crop, pad, average-pool), the way per-sample retinas of public RAM implementations work.
"""

from __future__ import annotations

import argparse
import platform
import time

import gymnasium as gym
import torch
import torch.nn.functional as F

import glimpse_env  # noqa: F401
from agents import RAMConfig, RecurrentAttentionModel, hybrid_loss, run_episodes
from glimpse_env.retina import location_to_pixel
from glimpse_env.vector_env import resolve_device

PRESETS = {
    "28x28, 6 glimpses, 8x8": dict(size=28, scales=1, glimpse_size=8, n_glimpses=6),
    "60x60, 4 glimpses, 12x12 x3": dict(size=60, scales=3, glimpse_size=12, n_glimpses=4),
}
EPOCH_EPISODES = 55_000 * 10  # one epoch: every training image in M=10 slots


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class LoopRetinaEnv:
    """The batched env, but every glimpse cut image by image in Python: the comparator's retina."""

    def __init__(self, env) -> None:
        self.env, self.num_envs = env, env.num_envs

    def reset(self, options=None):
        observation, info = self.env.reset(options=options)
        self.canvases = self.env.unwrapped.canvases.float() / 255.0
        return self._looped(observation), info

    def step(self, action):
        observation, *rest = self.env.step(action)
        return (self._looped(observation), *rest)

    def _looped(self, observation):
        config = self.env.unwrapped.config
        g, k, size = config.glimpse_size, config.scales, config.size
        pad = g * 2 ** (k - 1)
        centres = location_to_pixel(observation["location"], size, size).tolist()
        patches = []
        for canvas, (cx, cy) in zip(self.canvases, centres, strict=True):
            padded = F.pad(canvas, (pad, pad, pad, pad))
            scales = []
            for i in range(k):
                side = g * 2**i
                x0, y0 = cx - side // 2 + pad, cy - side // 2 + pad
                crop = padded[y0:y0 + side, x0:x0 + side]
                scales.append(F.avg_pool2d(crop[None, None], 2**i)[0, 0])
            patches.append(torch.stack(scales))
        return {"glimpse": torch.stack(patches), "location": observation["location"]}


def time_steps(model, env, optimizer, autocast_dtype, device, steps: int, batch: int, mc: int) -> float:
    """Seconds per training step, averaged over ``steps`` after two warm-up steps."""
    generator = torch.Generator().manual_seed(0)

    def one_step() -> None:
        indices = torch.randint(0, 55_000, (batch,), generator=generator).repeat_interleave(mc).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = hybrid_loss(run_episodes(model, env, {"indices": indices}))
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    for _ in range(2):
        one_step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def breakdown(model, env, optimizer, autocast_dtype, device, batch: int, mc: int, repeats: int = 5) -> dict:
    """Milliseconds of one step spent in the env alone, the model's forward, backward and the optimizer."""
    indices = torch.randint(0, 55_000, (batch,)).repeat_interleave(mc).to(device)
    zeros = {"location": torch.zeros(env.num_envs, 2, device=device),
             "prediction": torch.zeros(env.num_envs, 10, device=device)}
    n = env.unwrapped.config.n_glimpses
    times = {"env": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        env.reset(options={"indices": indices})
        for _ in range(n):
            env.step(zeros)
        synchronize(device)
        t1 = time.perf_counter()
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            loss = hybrid_loss(run_episodes(model, env, {"indices": indices}))
        synchronize(device)
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        synchronize(device)
        t3 = time.perf_counter()
        optimizer.step()
        synchronize(device)
        t4 = time.perf_counter()
        times["env"] += t1 - t0
        times["forward"] += (t2 - t1) - (t1 - t0)  # the rollout minus the env's own share
        times["backward"] += t3 - t2
        times["optimizer"] += t4 - t3
    return {key: 1000 * value / repeats for key, value in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="all", help="cpu, cuda, or all (CPU, and CUDA when present)")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per configuration")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step")
    parser.add_argument("--mc-samples", type=int, default=10, help="M: slots per image")
    parser.add_argument("--loop-steps", type=int, default=2, help="timed steps of the per-sample-loop comparator")
    args = parser.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) if args.device == "all" else [args.device]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    slots = args.batch_size * args.mc_samples
    for device_name in devices:
        device = resolve_device(device_name)
        for preset, kwargs in PRESETS.items():
            env = gym.make_vec("GlimpseMNIST-v0", num_envs=slots, device=device, **kwargs)
            env.reset(seed=0)
            config = RAMConfig.from_spaces(env.single_observation_space, env.single_action_space)
            results = {}
            for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
                torch.manual_seed(0)
                model = RecurrentAttentionModel(config).to(device)
                optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
                seconds = time_steps(model, env, optimizer, dtype, device, args.steps, args.batch_size,
                                     args.mc_samples)
                results[label] = seconds
                parts = breakdown(model, env, optimizer, dtype, device, args.batch_size, args.mc_samples)
                share = ", ".join(f"{k} {v:.1f} ms" for k, v in parts.items())
                print(f"[{device}] {preset}, {label}: {slots / seconds:,.0f} episodes/s, "
                      f"{EPOCH_EPISODES * seconds / slots:.1f} s/epoch (M=10); "
                      f"one step {1000 * seconds:.1f} ms: {share}")
            fastest = min(results.values())
            if device.type == "cpu" and args.loop_steps > 0:
                torch.manual_seed(0)
                model = RecurrentAttentionModel(config).to(device)
                optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
                loop = time_steps(model, LoopRetinaEnv(env), optimizer, None, device, args.loop_steps,
                                  args.batch_size, args.mc_samples)
                print(f"[{device}] {preset}, comparator (per-sample loop retina, fp32): {slots / loop:,.0f} "
                      f"episodes/s; ours is {loop / fastest:.1f}x faster")
            if preset.startswith("28x28") and device.type == "cpu":
                verdict = "met" if slots / fastest >= 20_000 else "MISSED"
                print(f"    target >= 20,000 episodes/s (M=10 epoch < 30 s): {verdict}")
            env.close()


if __name__ == "__main__":
    main()
