"""A stable-baselines3 agent on GlimpseMNIST-v0: what a user would try instead of the Recurrent Attention Model.

    python train/sb3_baseline.py                                   # RecurrentPPO (LSTM), 28x28 MNIST, 6 glimpses
    python train/sb3_baseline.py --preset translated60-4g          # 60x60 translated MNIST, 4 glimpses
    python train/sb3_baseline.py --algo ppo --timesteps 200000     # plain PPO (no memory), another budget

The agent is sb3-contrib's ``RecurrentPPO("MultiInputLstmPolicy")`` (default) or SB3's ``PPO("MultiInputPolicy")``,
trained for a fixed budget of environment steps on ``FlattenAction(gym.make("GlimpseMNIST-v0", ...))`` (the action
is one Box(12): the next glimpse's location, then 10 class scores in ``[-score_bound, score_bound]``), in
``--n-envs`` envs made by SB3's ``make_vec_env``. It learns from the env's sparse reward only (1 iff the final
scores' argmax is the label): no cross-entropy on the label, unlike the RAM agent's hybrid loss.

Presets are those of train/ram_agent.py (agents.training.PRESETS). An episode is ``n_glimpses`` environment steps,
as in the RAM agent, so ``episodes_equivalent = timesteps / n_glimpses`` is the number of RAM training episodes
(image x sampled path) the same budget buys; results.json also gives it in RAM epochs (55,000 images x mc_samples
paths each).

The default budget, 900,000 steps, is 41 min of RecurrentPPO on mnist28-6g on one CPU thread (367 steps/s); on
translated60-4g RecurrentPPO ran at ~220 steps/s beside another run, so the README's row uses --timesteps 600000
(45.5 min). Measured with OMP_NUM_THREADS=1; plain PPO is ~1,700 steps/s.

The test error is measured once, at the end, on the test split's deterministic canvases: every test digit played
once (``reset(options={"index": i})``) with the deterministic policy; an episode is an error when its final reward
is 0. A run folder (default runs/sb3-<preset>-<algo>-<time>) holds config.json, model.zip and results.json.
"""

from agents.training.sb3_baseline import main as _main


def main(argv: list[str] | None = None) -> dict:
    return _main(argv, description=__doc__)


if __name__ == "__main__":
    main()
