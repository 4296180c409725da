"""Fig. 8 of the paper: do the pre-trained video model's features carry what the target task needs? A regression
head is trained on frozen action-free posterior features of target-task episodes to predict the proprioceptive
state (the end-effector position, Meta-World's first three state entries) and the dense reward, from the
pre-trained model and from a randomly initialised one of the same shape; the held-out error is recorded through
the head's training (the paper's curves). The paper trains its regressor on a pre-collected DMC dataset; here the
episodes are the target task's own, with uniform random actions (rewards and states the agent never sees while
pre-training), split by episode into training and held-out sets.

The error is normalised by the held-out targets' variance per dimension (1 = predicting the mean; 0 = exact).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vidrl_jax.envs.host import HostEnv, episode_seed
from vidrl_jax.nets.mlp import MLP
from vidrl_jax.nets.rssm import features, observe
from vidrl_jax.nets.world_model import WorldModel

TARGETS = {"state": lambda s: s[..., :3]}   # the end effector's (x, y, z)


def probe_config(**overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(dict(episodes=40, held_out=10, steps=1000, batch_size=256, lr=1e-3,
                                     hidden=(128, 128), eval_every=50))
  c.update(overrides)
  return c


def collect(env: HostEnv, episodes: int, seed: int) -> dict:
  """Random-action episodes: {'image' (N, T, H, W, 3), 'state' (N, T, 3), 'reward' (N, T)}, the reward of step t
  being the one received on arriving at frame t (0 at the first frame)."""
  rng = np.random.default_rng(seed)
  out = {"image": [], "state": [], "reward": []}
  for ep in range(episodes):
    obs, images, states, rewards = env.reset(episode_seed(seed, ep)), [], [], [0.0]
    images.append(obs["image"]), states.append(TARGETS["state"](obs["state"]))
    for _ in range(env.max_steps):       # Meta-World episodes end at the limit only
      obs, r, _ = env.step(rng.uniform(-1.0, 1.0, env.action_dim).astype(np.float32))
      images.append(obs["image"]), states.append(TARGETS["state"](obs["state"])), rewards.append(r)
    out["image"].append(np.stack(images)), out["state"].append(np.stack(states))
    out["reward"].append(np.asarray(rewards, np.float32))
  return {k: np.stack(v) for k, v in out.items()}


def posterior_features(wm: WorldModel, params: dict, images: np.ndarray, rng: jax.Array) -> np.ndarray:
  """(N, T, F): the action-free model's filtered features of each episode from its first frame."""
  obs = {"image": jnp.swapaxes(jnp.asarray(images), 0, 1)}
  T, N = obs["image"].shape[:2]
  filt = observe(wm.rssm, params["rssm"], wm.embed(params, obs), rng, actions=jnp.zeros((T, N, 0)),
                 is_first=jnp.zeros((T, N), bool).at[0].set(True))
  return np.asarray(jnp.swapaxes(features(filt.states), 0, 1))


def regression_curve(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                     config: ml_collections.ConfigDict, seed: int) -> dict:
  """An MLP head trained by Adam on (x, y) rows; the held-out error normalised by the held-out variance, every
  `eval_every` steps: {'steps', 'error'} (lists)."""
  # features standardised on the training rows, the scale floored at 0.1: a categorical class that never fires in
  # training (std 0) must not turn a held-out one-hot into a 1e6 input
  mu, sd = x_train.mean(0), np.maximum(x_train.std(0), 0.1)
  ym, ys = y_train.mean(0), y_train.std(0) + 1e-6
  xt, xe = jnp.asarray((x_train - mu) / sd), jnp.asarray((x_test - mu) / sd)
  yt = jnp.asarray((y_train - ym) / ys)
  head = MLP(hidden=tuple(config.hidden), out=y_train.shape[-1])
  params = head.init(jax.random.key(seed), jnp.zeros((1, x_train.shape[-1])))
  tx = optax.adam(config.lr)
  opt = tx.init(params)
  var = y_test.var(0) + 1e-12

  @jax.jit
  def step(params, opt, idx):
    loss = lambda p: jnp.mean(jnp.square(head.apply(p, xt[idx]) - yt[idx]))
    grads = jax.grad(loss)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt

  error = jax.jit(lambda p: jnp.mean(jnp.mean(jnp.square(head.apply(p, xe) * ys + ym - y_test), 0) / var))
  rng = np.random.default_rng(seed)
  steps, errors = [0], [float(error(params))]
  for i in range(1, int(config.steps) + 1):
    params, opt = step(params, opt, rng.integers(0, len(xt), int(config.batch_size)))
    if i % int(config.eval_every) == 0:
      steps.append(i), errors.append(float(error(params)))
  return {"steps": steps, "error": errors}


def probe(wm: WorldModel, models: dict[str, dict], env_fn: Callable[[], HostEnv],
          config: ml_collections.ConfigDict, seed: int) -> dict:
  """{model name: {target: {'steps', 'error', 'final', 'best'}}} for each params in `models` (e.g. pre-trained, random),
  on the same episodes and held-out split."""
  data = collect(env_fn(), int(config.episodes), seed)
  n_test = int(config.held_out)
  out = {}
  for name, params in models.items():
    feat = posterior_features(wm, params, data["image"], jax.random.key(seed))
    out[name] = {}
    for target in ("state", "reward"):
      y = data[target].reshape(*data[target].shape[:2], -1)
      flat = lambda a: a.reshape(-1, a.shape[-1])
      curve = regression_curve(flat(feat[n_test:]), flat(y[n_test:]), flat(feat[:n_test]), flat(y[:n_test]),
                               config, seed)
      out[name][target] = {**curve, "final": curve["error"][-1], "best": min(curve["error"])}
  return out
