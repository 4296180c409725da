"""How plainly each Procgen game's frames show the action: a quick screen for a CPU-budget latent-action run.

For every game, a uniform-random policy plays `--envs` x `--steps` steps; an MLP (one hidden layer of 256) learns the
action a_t from the frame difference o_{t+1} - o_t (2x2-average-pooled to 32x32x3), and its held-out accuracy is
printed (chance 1/15; several of Procgen's 15 actions do the same thing in most games, so no game reaches 1).
`--shifts=-1,0,1` also labels each difference with a_{t+shift}: only shift 0 should beat chance, which checks the
data's action/frame alignment (envpool's Procgen and the project's `rollout`).

  .venv/bin/python scripts/procgen_action_signal.py --games=miner,maze,bigfish
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from vidrl_jax.envs import rollout
from vidrl_jax.envs.procgen import GAMES, make_procgen

_GAMES = flags.DEFINE_list("games", sorted(GAMES), "Procgen games to screen.")
_ENVS = flags.DEFINE_integer("envs", 16, "Parallel environments.")
_STEPS = flags.DEFINE_integer("steps", 512, "Steps per environment.")
_SHIFTS = flags.DEFINE_list("shifts", ["0"], "Label offsets: a_{t+shift} for the difference o_{t+1} - o_t.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 3000, "Adam steps of the MLP (batch 256, lr 1e-3).")


def transitions(game: str, envs: int, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Pooled frame differences (T-1, N, 3072), actions (T, N) and done flags (T, N) of a uniform-random policy."""
  env = make_procgen(game, envs, seed=3, distribution_mode="easy", num_levels=0)
  policy = lambda params, obs, rng: jax.random.randint(rng, obs.shape[:1], 0, env.num_actions)
  state, obs = env.reset(jax.random.key(0))
  _, _, traj = jax.jit(lambda s, o, k: rollout(env, policy, None, s, o, k, steps))(state, obs, jax.random.key(1))
  frames = np.asarray(traj["obs"], np.float32) / 255.0
  frames = frames.reshape(steps, envs, 32, 2, 32, 2, 3).mean((3, 5))
  return (frames[1:] - frames[:-1]).reshape(steps - 1, envs, -1), np.asarray(traj["action"]), np.asarray(traj["done"])


def heldout_accuracy(x: np.ndarray, y: np.ndarray, num_classes: int, train_steps: int) -> float:
  """An MLP trained on the first 80% of (x, y), scored on the rest."""
  n_train = int(0.8 * len(x))
  params = {"w1": jax.random.normal(jax.random.key(0), (x.shape[1], 256)) * 0.02, "b1": jnp.zeros(256),
            "w2": jnp.zeros((256, num_classes)), "b2": jnp.zeros(num_classes)}
  logits = lambda p, x: jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
  opt = optax.adam(1e-3)

  @jax.jit
  def step(p, s, xb, yb):
    grads = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(logits(p, xb), yb).mean())(p)
    updates, s = opt.update(grads, s)
    return optax.apply_updates(p, updates), s

  state, rng = opt.init(params), np.random.default_rng(0)
  for _ in range(train_steps):
    b = rng.integers(0, n_train, 256)
    params, state = step(params, state, x[b], y[b])
  return float(np.mean(np.argmax(logits(params, x[n_train:]), -1) == y[n_train:]))


def main(argv):
  del argv
  shifts = [int(s) for s in _SHIFTS.value]
  print("| game | transitions | " + " | ".join(f"accuracy, a_(t{s:+d})" for s in shifts) + " | s |")
  print("|---|---|" + "---|" * len(shifts) + "---|")
  for game in _GAMES.value:
    start = time.time()
    diffs, actions, done = transitions(game, _ENVS.value, _STEPS.value)
    lo, hi = max(0, -min(shifts)), len(diffs) - max(0, max(shifts))
    t = np.arange(lo, hi)
    keep = ~done[t]                                   # o_{t+1} must follow o_t in the same episode
    x = diffs[t][keep]
    accs = [heldout_accuracy(x, actions[t + s][keep], 15, _TRAIN_STEPS.value) for s in shifts]
    print(f"| {game} | {len(x)} | " + " | ".join(f"{a:.3f}" for a in accs) + f" | {time.time() - start:.0f} |",
          flush=True)


if __name__ == "__main__":
  app.run(main)
