"""BCO(0) (Torabi et al. 2018), the baseline of AIME (Zhang et al. 2023, Sec. 4 and App. B) and of RLV
(Schmeckpeper et al. 2020, Fig. 3; `vidrl_jax.methods.rlv.baselines`), and oracle BC.

BCO(0): an inverse dynamics model (IDM) p(a_t | o_{t-4..t}, o_{t+1}) is trained on the action-labelled
embodiment dataset, labels the observation-only demonstrations with its mode, and a policy pi(a_t | o_{t-4..t})
is behaviour-cloned on those labels. "BC with true actions" (the oracle) is the same BC on the demos' own actions.
The demonstrations may be action-free (RLV's observation pools: `stacked_frames(data, stack, actions=False)`);
only the IDM and the oracle need actions. `stack=1` is Torabi et al.'s p(a_t | s_t, s_{t+1}) on Markov states.

AIME App. B: observations pass through the encoder (identity for vectors, the World-Models conv encoder for 64x64
images, trained jointly), 5 consecutive frame embeddings are stacked, an MLP (2x128, ELU) gives a tanh-Gaussian
over the action, both models are trained by negative log-likelihood, and each dataset is split 7:3 by trajectory,
the final model being the one with the lowest validation loss (early stopping).

Validation (our realisation): every `val_every` steps, before that step's update, the NLL of a fixed subset of
at most `val_size` validation transitions is computed inside the jitted step; `best_params`/`best_val` live in
the task state, so the selection survives checkpoint/resume. Only those steps' batches carry the validation
samples (the step is compiled once for each batch structure). Make `val_every` a multiple of the loop's
`log_every` so that each logged `val_nll` is exactly one check.
"""

from __future__ import annotations

import zlib
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vidrl_jax.data.sequence import SequenceDataset, Windows
from vidrl_jax.distributions import TanhNormal
from vidrl_jax.envs import host
from vidrl_jax.errors import VidrlError
from vidrl_jax.losses import weighted_sum
from vidrl_jax.nets.conv import ConvEncoder
from vidrl_jax.nets.heads import TanhGaussianPolicy
from vidrl_jax.nets.inverse import InverseModel
from vidrl_jax.train import Task
from vidrl_jax.train.optim import make_optimizer, optim_config

IMAGE = "image"


def bco_config(**overrides) -> ml_collections.ConfigDict:
  """BCO(0)/BC settings (AIME App. B: 5 stacked frames, 2x128 ELU MLP, 7:3 split, best validation loss).

  `idm_steps`/`bc_steps` are our choice (the paper does not state them; 50k = AIME's 500 policy epochs of 100
  steps). `val_size` caps the validation transitions evaluated per check (a fixed subset, for comparable checks).
  """
  c = ml_collections.ConfigDict(dict(
      stack=5, hidden=(128, 128), cnn_width=32, batch_size=256, idm_steps=50_000, bc_steps=50_000,
      val_fraction=0.3, val_every=100, val_size=2048, optim=optim_config(lr=1e-3)))
  c.update(overrides)
  return c


# ----------------------------------------------------------------------------------------------------- data


def stacked_frames(data: SequenceDataset, stack: int = 5, actions: bool = True) -> Windows:
  """Every transition (episode i, t in [0, T_i - 1]) as a window of o_{t-stack+1..t} and o_{t+1}.

  Rows before the episode's start repeat its first frame (the window's `pad`); the true a_t is the window's last
  action (a_t = pre_action[t + 1]). Window ids run episode by episode, t ascending. `actions=False` accepts
  action-free data (demonstrations to label and clone on labels).
  """
  if stack < 1:
    raise VidrlError(f"the frame stack needs stack >= 1, got {stack}")
  if actions and not data.has_actions:
    raise VidrlError(f"BCO needs the actions of {data.name} (for the IDM, or for the oracle's true actions); "
                     f"use an action-labelled dataset")
  return data.windows(stack + 1, pad=stack - 1)


def gather_stacks(frames: Windows, ids: np.ndarray, labels: np.ndarray | None = None,
                  with_next: bool = True) -> dict:
  """{'obs': {key: (B, stack [+1], ...)}, 'action': (B, A)} for window ids (labels, indexed by the ids of the
  full window set, replace the true actions; without labels, action-free data gives no 'action')."""
  b = frames.gather(ids, labels=("action",) if labels is None else False)
  obs = b["obs"] if with_next else {k: v[:, :-1] for k, v in b["obs"].items()}
  if labels is None and "action" not in b:
    return {"obs": obs}
  action = b["action"][:, -1] if labels is None else labels[frames.parent_ids(ids)]
  return {"obs": obs, "action": np.asarray(action, np.float32)}


def true_actions(frames: Windows) -> np.ndarray:
  """a_t of every window of `frames`, (N, A) float32."""
  return np.asarray(frames.gather(np.arange(frames.num_windows), keys=(), labels=("action",))["action"][:, -1],
                    np.float32)


# ---------------------------------------------------------------------------------------------------- model


def StackNet(action_dim: int, hidden: Sequence[int] = (128, 128), image: bool = False, cnn_width: int = 32,
             with_next: bool = False, stack: int = 5) -> InverseModel:
  """Stacked obs {key: (B, stack [+1], ...)} -> tanh-Gaussian over a_t (AIME App. B's BCO networks), as a
  `nets.inverse.InverseModel` on a context stack.

  Each frame is encoded (ConvEncoder for 'image', trained jointly; vectors concatenated as they are), the frame
  embeddings are flattened in order (o_{t-stack+1..t}, then o_{t+1} for the IDM) and fed to a tanh-Gaussian MLP.
  Without `with_next` it is the BC policy pi(a_t | o_{t-stack+1..t}) of the same shape.
  """
  return InverseModel(head_net=TanhGaussianPolicy(action_dim, tuple(hidden)),
                      encoder_net=ConvEncoder(cnn_width) if image else None, fuse="features",
                      frames=stack + int(with_next), image_key=IMAGE)


def _net(obs_keys: Sequence[str], action_dim: int, config: ml_collections.ConfigDict, with_next: bool) -> InverseModel:
  return StackNet(action_dim, tuple(config.hidden), IMAGE in obs_keys, config.cnn_width, with_next, config.stack)


def _init_key(rng: jax.Array) -> jax.Array:
  """An 'rbg' key derived from `rng` for drawing the initial parameters (still a pure function of `rng`).

  XLA:CPU compiles one threefry sampler per initialiser slowly (about 10 s for the conv encoder's init on a
  busy 2-core machine); RngBitGenerator compiles in about 1 s.
  """
  return jax.random.wrap_key_data(jax.random.bits(rng, (4,), jnp.uint32), impl="rbg")


def _select(obs: Mapping[str, Any], obs_keys: Sequence[str]) -> dict:
  return {k: obs[k] for k in obs_keys}


def _check(data: Windows, obs_keys: Sequence[str], action_dim: int, config: ml_collections.ConfigDict,
           labels: np.ndarray | None = None) -> None:
  missing = [k for k in obs_keys if k not in data.data.obs]
  if missing:
    raise VidrlError(f"obs key(s) {missing} are not in the dataset (it has {list(data.data.obs_keys)}); "
                     f"open it with the same obs_keys")
  if data.length - 1 != config.stack or data.pad != config.stack - 1:
    raise VidrlError(f"the frame stack of the windows ({data.length - 1}) differs from config.stack "
                     f"{config.stack}; build them with stacked_frames(data, config.stack)")
  if data.data.has_actions and data.data.action_dim != action_dim:
    raise VidrlError(f"the data's actions have {data.data.action_dim} dimensions but action_dim is {action_dim}")
  if labels is not None and labels.shape != (data.num_windows, action_dim):
    raise VidrlError(f"labels of shape {labels.shape} do not fit the data's {data.num_windows} transitions "
                     f"with {action_dim}-d actions; label them with label_demos on the same windows")


# ---------------------------------------------------------------------------------------------------- tasks


def _task(name: str, data: Windows, labels: np.ndarray | None, obs_keys: Sequence[str], action_dim: int,
          config: ml_collections.ConfigDict, seed: int, with_next: bool, num_steps: int) -> Task:
  """The NLL task shared by the IDM and BC, with best-validation selection kept in the state."""
  _check(data, obs_keys, action_dim, config, labels)
  if labels is None and not data.data.has_actions:
    raise VidrlError(f"{name}: the data has no actions; train on action-labelled data or pass the labels of "
                     f"label_demos")
  if config.val_every < 1:
    raise VidrlError(f"val_every must be >= 1, got {config.val_every}")
  net = _net(obs_keys, action_dim, config, with_next)
  tx = make_optimizer(config.optim, num_steps)
  train, val = data.split(config.val_fraction, seed)
  val_ids = np.arange(val.num_windows)
  if len(val_ids) == 0:
    raise VidrlError(f"{name}: the data has no validation transitions; use more episodes or a larger "
                     f"val_fraction (AIME App. B splits 7:3)")
  n_val = min(config.val_size, len(val_ids))
  chunk = min(config.batch_size, n_val)
  chunk -= chunk % jax.device_count()        # every chunk splits over the devices
  if chunk == 0:
    raise VidrlError(f"{name}: {n_val} validation transitions cannot be split over {jax.device_count()} "
                     f"devices; use more validation trajectories or a larger val_size")
  n_val -= n_val % chunk
  val_ids = np.sort(np.random.default_rng([seed, 11]).choice(val_ids, n_val, replace=False))
  proc, nproc = jax.process_index(), jax.process_count()
  local, local_val = config.batch_size // nproc, n_val // nproc
  stream = zlib.crc32(name.encode()) & 0x7FFFFFFF
  val_cache: list[dict] = []

  def prepare(b: dict) -> dict:
    return {"obs": _select(b["obs"], obs_keys), "action": b["action"]}

  def batch(step: int) -> dict:
    ids = train.draw(seed * 1_000_003 + stream, step, config.batch_size, proc, nproc)
    out = {"train": prepare(gather_stacks(train, ids, labels, with_next))}
    if step % config.val_every == 0:
      if not val_cache:
        val_cache.append(prepare(gather_stacks(val, val_ids[proc * local_val:(proc + 1) * local_val], labels,
                                               with_next)))
      out["val"] = val_cache[0]
    return out

  sample = prepare(gather_stacks(data, np.arange(1), labels, with_next))

  def init(rng: jax.Array) -> dict:
    params = net.init(_init_key(rng), jax.tree.map(jnp.asarray, sample["obs"]))["params"]
    return {"params": params, "opt_state": tx.init(params), "best_params": params,
            "best_val": jnp.asarray(jnp.inf, jnp.float32), "last_val": jnp.asarray(jnp.inf, jnp.float32),
            "step": jnp.zeros((), jnp.int32)}

  def nll(params, b: dict) -> tuple[jax.Array, TanhNormal]:
    dist = net.apply({"params": params}, b["obs"])
    return -dist.log_prob(b["action"]), dist

  def val_nll(params, val: dict) -> jax.Array:
    chunks = jax.tree.map(lambda x: x.reshape((-1, chunk, *x.shape[1:])), val)
    return jnp.mean(jax.lax.map(lambda b: jnp.mean(nll(params, b)[0]), chunks))

  def step(state: dict, b: dict, rng: jax.Array) -> tuple[dict, dict]:
    del rng  # deterministic model; the batch carries the randomness
    state = dict(state)
    if "val" in b:  # a check of the params after `step` updates (static: this batch structure has 'val')
      v = val_nll(state["params"], b["val"])
      better = v < state["best_val"]
      state["best_params"] = jax.tree.map(lambda new, old: jnp.where(better, new, old), state["params"],
                                          state["best_params"])
      state["best_val"] = jnp.where(better, v, state["best_val"])
      state["last_val"] = v

    def loss_fn(params):
      terms, dist = nll(params, b["train"])
      total, metrics = weighted_sum({"nll": terms}, {"nll": 1.0})
      metrics["action_mse"] = jnp.mean(jnp.square(dist.mode() - b["train"]["action"]))
      return total, metrics

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
    updates, state["opt_state"] = tx.update(grads, state["opt_state"], state["params"])
    state["params"] = optax.apply_updates(state["params"], updates)
    state["step"] = state["step"] + 1
    metrics["val_nll"] = state["last_val"]
    return state, metrics

  def evaluate(state: dict, step: int) -> dict:
    del step
    return {"best_val_nll": float(state["best_val"])}

  return Task(name=name, init=init, step=step, num_steps=num_steps, batch=batch, evaluate=evaluate,
              show=("loss/total", "val_nll"))


def make_idm_task(name: str, data: Windows, obs_keys: Sequence[str], action_dim: int,
                  config: ml_collections.ConfigDict, seed: int) -> Task:
  """BCO(0)'s IDM p(a_t | o_{t-4..t}, o_{t+1}) by NLL on the embodiment data; use `state['best_params']`."""
  return _task(name, data, None, obs_keys, action_dim, config, seed, True, config.idm_steps)


def make_bc_task(name: str, data: Windows, labels: np.ndarray | None, obs_keys: Sequence[str],
                 action_dim: int, config: ml_collections.ConfigDict, seed: int) -> Task:
  """BC pi(a_t | o_{t-4..t}) by NLL on IDM labels (BCO(0)) or, with labels None, the true actions (oracle BC)."""
  return _task(name, data, labels, obs_keys, action_dim, config, seed, False, config.bc_steps)


def label_demos(idm_params, data: Windows, obs_keys: Sequence[str], action_dim: int,
                config: ml_collections.ConfigDict) -> np.ndarray:
  """The IDM's mode tanh(mean) for every transition of `data` (BCO(0)'s labelling step), (N, A) float32."""
  _check(data, obs_keys, action_dim, config)
  net = _net(obs_keys, action_dim, config, with_next=True)
  apply = jax.jit(lambda p, obs: net.apply({"params": p}, obs).mode())
  ids = np.arange(data.num_windows)
  size = min(config.batch_size, len(ids))
  out = []
  for start in range(0, len(ids), size):
    chunk = ids[start:start + size]
    padded = np.concatenate([chunk, np.full(size - len(chunk), chunk[-1])])  # one compiled shape
    obs = _select(gather_stacks(data, padded)["obs"], obs_keys)
    out.append(np.asarray(apply(idm_params, obs))[:len(chunk)])
  return np.concatenate(out).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- policy


def stack_policy(params, obs_keys: Sequence[str], action_dim: int, config: ml_collections.ConfigDict) -> host.Policy:
  """The BC policy on host envs (`host.run_episodes`): deterministic tanh(mean) on the last `config.stack` frames.

  The carry holds each env's last `stack` frames (`init`'s is None: the first call, on episodes' first frames,
  fills them); where `is_first` the stack is filled with the current frame (as the padded windows of
  `stacked_frames` do at an episode's start). One jitted call per `act`.
  """
  keys, stack = tuple(obs_keys), config.stack
  net = _net(keys, action_dim, config, with_next=False)

  def act(params, carry: dict | None, obs: dict, is_first: jax.Array, rng: jax.Array) -> tuple[jax.Array, dict]:
    tiled = {k: jnp.repeat(v[:, None], stack, axis=1) for k, v in obs.items()}
    if carry is None:
      new = tiled
    else:
      rolled = {k: jnp.concatenate([carry[k][:, 1:], obs[k][:, None]], axis=1) for k in obs}
      new = {k: jnp.where(is_first.reshape((-1,) + (1,) * (obs[k].ndim)), tiled[k], rolled[k]) for k in obs}
    return net.apply({"params": params}, new).mode(), new

  return host.bind(host.RecurrentPolicy(init=lambda n: None, act=act), params, jax.random.PRNGKey(0),
                   obs_fn=lambda obs: {k: np.asarray(obs[k]) if k == IMAGE else np.asarray(obs[k], np.float32)
                                       for k in keys})