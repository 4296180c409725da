"""BCO(0) (Torabi et al. 2018), the baseline of AIME (Zhang et al. 2023, Sec. 4 and App. B), and oracle BC.

BCO(0): an inverse dynamics model (IDM) p(a_t | o_{t-4..t}, o_{t+1}) is trained on the action-labelled
embodiment dataset, labels the observation-only demonstrations with its mode, and a policy pi(a_t | o_{t-4..t})
is behaviour-cloned on those labels. "BC with true actions" (the oracle) is the same BC on the demos' own actions.

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

from vidrl_jax.distributions import TanhNormal
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


class StackedFrames:
  """Every transition (trajectory i, t in [0, T_i - 1]) as frame indices into one concatenated frame store.

  `index[n]` holds the global frame indices of o_{t-stack+1..t} (indices before the trajectory's start clipped to
  its first frame) and of o_{t+1}; `actions[n]` is the true a_t = pre_action[t + 1]. Trajectories are split
  `1 - val_fraction : val_fraction` by a seeded permutation (a lone trajectory is split in time instead).
  """

  def __init__(self, trajectories: Sequence[Mapping[str, np.ndarray]], obs_keys: Sequence[str], stack: int = 5,
               val_fraction: float = 0.3, seed: int = 0):
    if stack < 1:
      raise VidrlError(f"StackedFrames needs stack >= 1, got {stack}")
    if not 0.0 <= val_fraction < 1.0:
      raise VidrlError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    if not trajectories:
      raise VidrlError("StackedFrames got no trajectories; pass a non-empty list of trajectory dicts")
    self.obs_keys = tuple(obs_keys)
    self.stack = stack
    frames: dict[str, list[np.ndarray]] = {k: [] for k in self.obs_keys}
    index, actions, traj_of, time_of = [], [], [], []
    offset = 0
    for i, traj in enumerate(trajectories):
      missing = [k for k in (*self.obs_keys, "pre_action") if k not in traj]
      if missing:
        raise VidrlError(f"trajectory {i} lacks the key(s) {missing} (it has {sorted(traj)}); "
                         f"choose obs_keys among its observation keys")
      length = len(traj["pre_action"])
      for k in self.obs_keys:
        if len(traj[k]) != length:
          raise VidrlError(f"trajectory {i} has {len(traj[k])} {k!r} frames but {length} pre_actions; "
                           f"every key needs T+1 entries")
        frames[k].append(np.asarray(traj[k]))
      t = np.arange(length - 1)
      past = np.maximum(t[:, None] + np.arange(-stack + 1, 1)[None], 0)
      index.append(offset + np.concatenate([past, t[:, None] + 1], axis=1))
      actions.append(np.asarray(traj["pre_action"][1:], np.float32))
      traj_of.append(np.full(length - 1, i))
      time_of.append(t)
      offset += length
    self.frames = {k: np.concatenate(v) if k == IMAGE else np.concatenate(v).astype(np.float32)
                   for k, v in frames.items()}
    self.index = np.concatenate(index).astype(np.int64)               # (N, stack + 1)
    self.actions = np.concatenate(actions)                             # (N, A)
    self.traj = np.concatenate(traj_of)                                # (N,)
    if len(self.index) == 0:
      raise VidrlError("the trajectories hold no transitions; each needs at least 2 frames")
    self.num_trajectories = len(trajectories)
    self.action_dim = self.actions.shape[-1]

    n_traj = len(trajectories)
    if val_fraction == 0.0:
      val_mask = np.zeros(len(self.index), bool)
    elif n_traj == 1:
      t_all = np.concatenate(time_of)
      val_mask = t_all >= int(round((1 - val_fraction) * len(t_all)))
    else:
      n_val = min(max(int(round(val_fraction * n_traj)), 1), n_traj - 1)
      val_trajs = np.random.default_rng([seed, 7]).permutation(n_traj)[:n_val]
      val_mask = np.isin(self.traj, val_trajs)
    self._parts = {"train": np.flatnonzero(~val_mask), "val": np.flatnonzero(val_mask),
                   "all": np.arange(len(self.index))}

  @property
  def num_samples(self) -> int:
    return len(self.index)

  def indices(self, part: str = "train") -> np.ndarray:
    """Sample ids of a part: 'train', 'val' or 'all'."""
    if part not in self._parts:
      raise VidrlError(f"unknown part {part!r}; use 'train', 'val' or 'all'")
    return self._parts[part]

  def gather(self, ids: np.ndarray, labels: np.ndarray | None = None, with_next: bool = True) -> dict:
    """{'obs': {key: (B, stack [+1], ...)}, 'action': (B, A)} for sample ids (labels replace the true actions)."""
    idx = self.index[ids] if with_next else self.index[ids, :self.stack]
    action = self.actions if labels is None else labels
    return {"obs": {k: v[idx] for k, v in self.frames.items()}, "action": np.asarray(action[ids], np.float32)}

  def batch(self, step: int, batch_size: int, seed: int, part: str = "train", labels: np.ndarray | None = None,
            with_next: bool = True) -> dict:
    """A uniform batch of a part, deterministic in (seed, step)."""
    ids = self.indices(part)
    if len(ids) == 0:
      raise VidrlError(f"the {part!r} part holds no transitions; use more trajectories or another val_fraction")
    pick = np.random.default_rng([seed, step]).integers(0, len(ids), batch_size)
    return self.gather(ids[pick], labels, with_next)


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


def _check(data: StackedFrames, obs_keys: Sequence[str], action_dim: int, config: ml_collections.ConfigDict,
           labels: np.ndarray | None = None) -> None:
  missing = [k for k in obs_keys if k not in data.frames]
  if missing:
    raise VidrlError(f"obs key(s) {missing} are not in the StackedFrames (it has {list(data.obs_keys)}); "
                     f"build it with the same obs_keys")
  if data.stack != config.stack:
    raise VidrlError(f"the StackedFrames stack {data.stack} differs from config.stack {config.stack}; "
                     f"build them with the same value")
  if data.action_dim != action_dim:
    raise VidrlError(f"the data's actions have {data.action_dim} dimensions but action_dim is {action_dim}")
  if labels is not None and labels.shape != (data.num_samples, action_dim):
    raise VidrlError(f"labels of shape {labels.shape} do not fit the data's {data.num_samples} transitions "
                     f"with {action_dim}-d actions; label them with label_demos on the same StackedFrames")


# ---------------------------------------------------------------------------------------------------- tasks


def _task(name: str, data: StackedFrames, labels: np.ndarray | None, obs_keys: Sequence[str], action_dim: int,
          config: ml_collections.ConfigDict, seed: int, with_next: bool, num_steps: int) -> Task:
  """The NLL task shared by the IDM and BC, with best-validation selection kept in the state."""
  _check(data, obs_keys, action_dim, config, labels)
  if config.val_every < 1:
    raise VidrlError(f"val_every must be >= 1, got {config.val_every}")
  net = _net(obs_keys, action_dim, config, with_next)
  tx = make_optimizer(config.optim, num_steps)
  val_ids = data.indices("val")
  if len(val_ids) == 0:
    raise VidrlError(f"{name}: the data has no validation transitions; build the StackedFrames with "
                     f"val_fraction > 0 (AIME App. B splits 7:3)")
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
    train = data.batch(step, config.batch_size, seed * 1_000_003 + stream, "train", labels, with_next)
    out = {"train": prepare(jax.tree.map(lambda x: x[proc * local:(proc + 1) * local], train))}
    if step % config.val_every == 0:
      if not val_cache:
        val = data.gather(val_ids[proc * local_val:(proc + 1) * local_val], labels, with_next)
        val_cache.append(prepare(val))
      out["val"] = val_cache[0]
    return out

  sample = prepare(data.gather(data.indices("all")[:1], labels, with_next))

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

  return Task(name=name, init=init, step=step, num_steps=num_steps, batch=batch, evaluate=evaluate)


def make_idm_task(name: str, data: StackedFrames, obs_keys: Sequence[str], action_dim: int,
                  config: ml_collections.ConfigDict, seed: int) -> Task:
  """BCO(0)'s IDM p(a_t | o_{t-4..t}, o_{t+1}) by NLL on the embodiment data; use `state['best_params']`."""
  return _task(name, data, None, obs_keys, action_dim, config, seed, True, config.idm_steps)


def make_bc_task(name: str, data: StackedFrames, labels: np.ndarray | None, obs_keys: Sequence[str],
                 action_dim: int, config: ml_collections.ConfigDict, seed: int) -> Task:
  """BC pi(a_t | o_{t-4..t}) by NLL on IDM labels (BCO(0)) or, with labels None, the true actions (oracle BC)."""
  return _task(name, data, labels, obs_keys, action_dim, config, seed, False, config.bc_steps)


def label_demos(idm_params, data: StackedFrames, obs_keys: Sequence[str], action_dim: int,
                config: ml_collections.ConfigDict) -> np.ndarray:
  """The IDM's mode tanh(mean) for every transition of `data` (BCO(0)'s labelling step), (N, A) float32."""
  _check(data, obs_keys, action_dim, config)
  net = _net(obs_keys, action_dim, config, with_next=True)
  apply = jax.jit(lambda p, obs: net.apply({"params": p}, obs).mode())
  ids = data.indices("all")
  size = min(config.batch_size, len(ids))
  out = []
  for start in range(0, len(ids), size):
    chunk = ids[start:start + size]
    padded = np.concatenate([chunk, np.full(size - len(chunk), chunk[-1])])  # one compiled shape
    obs = _select(data.gather(padded)["obs"], obs_keys)
    out.append(np.asarray(apply(idm_params, obs))[:len(chunk)])
  return np.concatenate(out).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- policy


class StackPolicy:
  """The BC policy as a host policy (`vidrl_jax.envs.host.Policy`): deterministic tanh(mean) on the last frames.

  The carry holds each env's last `stack` frames; on `is_first` the stack is filled with the current frame (as
  the clipped indices of `StackedFrames` do at a trajectory's start). One jitted call per `act`.
  """

  def __init__(self, params, obs_keys: Sequence[str], action_dim: int, config: ml_collections.ConfigDict):
    self.params = params
    self.obs_keys = tuple(obs_keys)
    self.stack = config.stack
    net = _net(self.obs_keys, action_dim, config, with_next=False)

    def act(params, carry: dict | None, obs: dict, is_first: jax.Array) -> tuple[jax.Array, dict]:
      tiled = {k: jnp.repeat(v[:, None], self.stack, axis=1) for k, v in obs.items()}
      if carry is None:
        new = tiled
      else:
        rolled = {k: jnp.concatenate([carry[k][:, 1:], obs[k][:, None]], axis=1) for k in obs}
        new = {k: jnp.where(is_first.reshape((-1,) + (1,) * (obs[k].ndim)), tiled[k], rolled[k]) for k in obs}
      return net.apply({"params": params}, new).mode(), new

    self._act = jax.jit(act)

  def init(self, n: int) -> None:
    """No frames yet: the first `act` (every `is_first` True) fills the stacks."""
    del n
    return None

  def act(self, carry: dict | None, obs: Mapping[str, np.ndarray],
          is_first: np.ndarray) -> tuple[np.ndarray, dict]:
    is_first = np.asarray(is_first, bool)
    if carry is None and not is_first.all():
      raise VidrlError("StackPolicy.act got no frame stack with is_first False; call policy.init(n) at the "
                       "start of the episodes and pass is_first True on their first step")
    x = {k: np.asarray(obs[k]) if k == IMAGE else np.asarray(obs[k], np.float32) for k in self.obs_keys}
    actions, carry = self._act(self.params, carry, x, is_first)
    return np.asarray(actions, np.float32), carry
