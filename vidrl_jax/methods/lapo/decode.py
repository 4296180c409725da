"""From latent actions to true actions (paper §4.3): probes, offline decoders and the online-decoding policy.

- `embed` runs a network over many windows in jitted chunks.
- `fit_decoders` trains one small decoder per labelled-set size, all sizes at once under `vmap` (decoder i sees
  only the first sizes[i] labelled transitions). It serves both the latent-quality probe (accuracy on held-out
  transitions) and the offline decoding sweep of paper Fig. 4 (16 ... 4096 labels).
- `online_policy` builds the stage-3 actor-critic and its PPO pieces: torso and latent head frozen, a decoder
  trained only by supervision on the rollout's (IDM latent, taken action) pairs, a zero-initialised RL head and a
  value head that PPO trains from staggered starts.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vidrl_jax.methods.lapo import models
from vidrl_jax.train.optim import Start, trainable_mask


def embed(fn: Callable[[jax.Array], jax.Array], inputs: np.ndarray, chunk: int = 1024) -> np.ndarray:
  """`fn` over `inputs` in chunks (padded to a fixed size, so it compiles once)."""
  jfn = jax.jit(fn)
  out = []
  for i in range(0, len(inputs), chunk):
    x = inputs[i:i + chunk]
    n = len(x)
    if n < chunk:
      x = np.concatenate([x, np.repeat(x[-1:], chunk - n, axis=0)])
    out.append(np.asarray(jfn(x))[:n])
  return np.concatenate(out)


def standardiser(latents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and std of unlabelled latents (no labels needed), used to normalise decoder inputs."""
  return latents.mean(0), latents.std(0) + 1e-6


def fit_decoders(rng: jax.Array, x: np.ndarray, y: np.ndarray, sizes: Sequence[int], num_actions: int,
                 hidden: Sequence[int], steps: int, lr: float, batch_size: int):
  """Decoder parameters for each size, stacked on a leading axis: decoder i trains on (x[:n_i], y[:n_i])."""
  dec = models.ActionDecoder(tuple(hidden), num_actions)
  x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
  tx = optax.adam(lr)

  def train_one(rng, n):
    r_init, r_steps = jax.random.split(rng)
    params = dec.init(r_init, x[:1])

    def sgd(carry, r):
      params, opt_state = carry
      idx = jax.random.randint(r, (batch_size,), 0, n)
      grads = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
          dec.apply(p, x[idx]), y[idx]).mean())(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(sgd, (params, tx.init(params)), jax.random.split(r_steps, steps))
    return params

  sizes = jnp.asarray(sizes, jnp.int32)
  return jax.jit(jax.vmap(train_one))(jax.random.split(rng, len(sizes)), sizes)


def decoder_accuracy(stacked_params, x: np.ndarray, y: np.ndarray, hidden: Sequence[int],
                     num_actions: int) -> np.ndarray:
  """Held-out accuracy of each stacked decoder."""
  dec = models.ActionDecoder(tuple(hidden), num_actions)
  logits = jax.jit(jax.vmap(lambda p: dec.apply(p, jnp.asarray(x, jnp.float32))))(stacked_params)
  return np.asarray(jnp.mean(jnp.argmax(logits, -1) == jnp.asarray(y)[None], axis=-1))


def balanced_accuracy(stacked_params, x: np.ndarray, y: np.ndarray, hidden: Sequence[int],
                      num_actions: int) -> np.ndarray:
  """Mean per-action recall of each stacked decoder: chance is 1/num_actions whatever the action frequencies."""
  dec = models.ActionDecoder(tuple(hidden), num_actions)
  pred = np.asarray(jax.jit(jax.vmap(lambda p: jnp.argmax(dec.apply(p, jnp.asarray(x, jnp.float32)), -1)))(
      stacked_params))
  present = [a for a in range(num_actions) if np.any(y == a)]
  return np.mean([(pred[:, y == a] == a).mean(axis=1) for a in present], axis=0)


def r_squared(target: np.ndarray, pred: np.ndarray) -> float:
  """1 - SSE / SST over all latent dimensions together: how much of the target latents' variance `pred` explains."""
  target, pred = np.asarray(target, np.float64), np.asarray(pred, np.float64)
  return float(1.0 - ((target - pred) ** 2).sum() / ((target - target.mean(0)) ** 2).sum())


def label_share(latents: np.ndarray, labels: np.ndarray) -> float:
  """The share of the latents' variance that the labels explain: R^2 of predicting each latent by the mean
  latent of its label. 1: the latent is a function of the action; near 0: it mostly encodes something else."""
  latents = np.asarray(latents, np.float64)
  means = np.zeros((int(labels.max()) + 1, latents.shape[1]))
  for a in np.unique(labels):
    means[a] = latents[labels == a].mean(0)
  return r_squared(latents, means[labels])


def take(stacked, i: int):
  return jax.tree.map(lambda a: a[i], stacked)


def offline_policy(config: ml_collections.ConfigDict, num_actions: int):
  """Composed policy for offline decoding: obs -> latent policy -> standardise -> decoder -> logits.

  Params: {'policy': stage-2 params, 'decoder': decoder params, 'mean': (L,), 'std': (L,)}.
  """
  pol, dec = models.policy(config), models.decoder(config, num_actions)

  def apply_fn(params, obs):
    latent = pol.apply(params["policy"], obs)
    logits = dec.apply(params["decoder"], (latent - params["mean"]) / params["std"])
    return logits, jnp.zeros(logits.shape[:-1])

  return apply_fn


def online_policy(config: ml_collections.ConfigDict, num_actions: int, obs_example: np.ndarray,
                  policy_params, idm_params, rng: jax.Array, latent_mean: np.ndarray | None = None,
                  latent_std: np.ndarray | None = None, supervised: bool = True):
  """Stage-3 network and its PPO hooks: (apply_fn, init_params, trainable_mask, aux_loss).

  As the official stage 3: the convolutions, the supervised path's fc and the latent head stay frozen, so the
  supervised path stays the stage-2 latent policy; the decoder learns only by supervision at `config.online.lr`
  (the PPO loss does not reach it); PPO trains the value head, the zero-initialised RL head and the RL path's copy
  of the fc from `config.online_starts` env steps on, at their learning-rate scales (official: value head from
  25k, RL head from 35k at lr/4, the fc from 50k at lr/10, with lr 1e-2). `aux_loss` is the supervised decoder loss on the rollout:
  the frozen IDM labels in-episode transitions (o_{t-1}, o_t, o_{t+1}) of the rollout (a random `online_sl_batch`
  of them per minibatch) with a latent, and the decoder learns to map it to the action actually taken in o_t
  (cross-entropy with label smoothing `online_label_smoothing`, official 0.05). The decoder sees the IDM's
  pre-quantisation latents, the space the latent head was trained to regress in stage 2, standardised by
  `latent_mean` and `latent_std` (from `standardiser` on unlabelled latents; default: none) as the offline decoders.
  Without `supervised` (the "RL, no-SL" ablations) the decoder is zero and frozen: the policy is the RL path alone.
  """
  net = models.decoded_policy(config, num_actions)
  idm, decoder = models.idm(config), models.decoder(config, num_actions)
  sl_batch = config.online_sl_batch
  k = config.model.context
  params = net.init(rng, jnp.asarray(obs_example[:1]))["params"]
  params = dict(params)
  torso = dict(policy_params["params"]["torso"])
  params["fc_sl"] = params["fc_rl"] = torso.pop("fc")
  params["torso"], params["latent_head"] = torso, policy_params["params"]["latent_head"]
  dim = config.model.latent_dim
  norm = {"mean": jnp.zeros((dim,)) if latent_mean is None else jnp.asarray(latent_mean, jnp.float32),
          "std": jnp.ones((dim,)) if latent_std is None else jnp.asarray(latent_std, jnp.float32)}
  if not supervised:
    params["decoder"] = jax.tree.map(jnp.zeros_like, params["decoder"])
  init_params = {"net": params, "idm": idm_params, "norm": norm}
  ppo = config.online
  updates_per_rollout = ppo.update_epochs * ppo.num_minibatches
  start = lambda env_steps: (env_steps // (ppo.num_envs * ppo.num_steps)) * updates_per_rollout
  s = config.online_starts
  starts = {"decoder": Start(0) if supervised else False, "rl_head": Start(start(s.rl_head), s.heads_lr_scale),
            "value_head": Start(start(s.value_head), s.heads_lr_scale),
            "fc_rl": Start(start(s.fc_rl), s.fc_rl_lr_scale)}
  trainable = trainable_mask(init_params, lambda path: starts.get(path.split("/")[1], False)
                             if path.startswith("net/") else False)

  def apply_fn(p, obs):
    net_params = dict(p["net"], decoder=jax.lax.stop_gradient(p["net"]["decoder"]))   # SL-only decoder
    return net.apply({"params": net_params}, obs, p["norm"]["mean"], p["norm"]["std"])

  def aux_loss(p, traj, rng):
    obs = jnp.concatenate([traj["obs"], traj["next_obs"][None]], axis=0)    # (T+1, N, ...)
    t_len, n_env = traj["obs"].shape[:2]
    # PPO calls this once per minibatch: label a random subset of the rollout's transitions, not all of them.
    n = min(sl_batch, (t_len - k) * n_env)
    flat = jax.random.choice(rng, (t_len - k) * n_env, (n,), replace=False)
    ts, env = flat // n_env + k, flat % n_env                              # a window needs k past frames
    windows = jnp.stack([obs[ts + j - k, env] for j in range(k + 2)], axis=1)   # (n, k+2, H, W, C)
    valid = jnp.ones((n,), bool)
    for j in range(k + 1):                                                  # no episode end inside
      valid &= ~traj["done"][ts + j - k, env]
    latent = jax.lax.stop_gradient(idm.apply(p["idm"], windows))
    logits = decoder.apply({"params": p["net"]["decoder"]}, (latent - p["norm"]["mean"]) / p["norm"]["std"])
    labels = optax.smooth_labels(jax.nn.one_hot(traj["action"][ts, env], num_actions),
                                 config.online_label_smoothing)
    ce = optax.softmax_cross_entropy(logits, labels)
    return {"sl_decoder": jnp.sum(ce * valid) / jnp.maximum(valid.sum(), 1)}

  return apply_fn, init_params, trainable, aux_loss
