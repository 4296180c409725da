"""A numpy ring buffer of transitions (obs, action, reward, next_obs, discount) for off-policy learners (SAC).

`discount` is the continuation flag 1 - terminal (no gamma): 0 only for a transition into a terminal state; an
episode cut by a time limit keeps 1 on its last transition, so the learner bootstraps through it.
"""

from __future__ import annotations

import numpy as np

from vidrl_jax import io
from vidrl_jax.errors import VidrlError

FIELDS = ("obs", "action", "reward", "next_obs", "discount")


class ReplayBuffer:
  """The last `capacity` transitions, float32; sampling is uniform with replacement."""

  def __init__(self, capacity: int, obs_dim: int, action_dim: int):
    if capacity < 1:
      raise VidrlError(f"the replay capacity must be at least 1, got {capacity}")
    self.capacity, self.obs_dim, self.action_dim = int(capacity), int(obs_dim), int(action_dim)
    self._data = dict(obs=np.zeros((capacity, obs_dim), np.float32),
                      action=np.zeros((capacity, action_dim), np.float32),
                      reward=np.zeros((capacity,), np.float32),
                      next_obs=np.zeros((capacity, obs_dim), np.float32),
                      discount=np.zeros((capacity,), np.float32))
    self._next = 0   # slot the next transition goes to
    self._size = 0

  def __len__(self) -> int:
    return self._size

  def add(self, obs: np.ndarray, action: np.ndarray, reward: float, next_obs: np.ndarray, terminal: bool) -> None:
    """One transition; discount = 0 when `next_obs` is terminal, else 1."""
    i = self._next
    self._data["obs"][i] = obs
    self._data["action"][i] = action
    self._data["reward"][i] = reward
    self._data["next_obs"][i] = next_obs
    self._data["discount"][i] = 0.0 if terminal else 1.0
    self._next = (i + 1) % self.capacity
    self._size = min(self._size + 1, self.capacity)

  def add_episode(self, obs_vectors: np.ndarray, actions: np.ndarray, rewards: np.ndarray, terminal: bool) -> None:
    """T transitions of one episode: obs (T+1, D), actions (T, A), rewards (T,); `actions[t]` taken in
    `obs[t]` gave `rewards[t]` and `obs[t+1]`. Only the last transition gets discount 0, and only if `terminal`."""
    obs_vectors, actions = np.asarray(obs_vectors, np.float32), np.asarray(actions, np.float32)
    rewards = np.asarray(rewards, np.float32)
    T = actions.shape[0]
    if obs_vectors.shape != (T + 1, self.obs_dim) or actions.shape != (T, self.action_dim) or rewards.shape != (T,):
      raise VidrlError(f"add_episode needs obs ({T + 1}, {self.obs_dim}), actions ({T}, {self.action_dim}) and "
                       f"rewards ({T},), got {obs_vectors.shape}, {actions.shape} and {rewards.shape}")
    discount = np.ones((T,), np.float32)
    if terminal and T:
      discount[-1] = 0.0
    rows = dict(obs=obs_vectors[:-1], action=actions, reward=rewards, next_obs=obs_vectors[1:], discount=discount)
    keep = min(T, self.capacity)  # an episode longer than the buffer keeps its last `capacity` transitions
    idx = (self._next + np.arange(T - keep, T)) % self.capacity if keep else np.zeros((0,), np.int64)
    for k in FIELDS:
      self._data[k][idx] = rows[k][T - keep:]
    self._next = (self._next + T) % self.capacity
    self._size = min(self._size + T, self.capacity)

  def sample(self, rng: np.random.Generator, batch_size: int) -> dict[str, np.ndarray]:
    """A batch dict of `FIELDS`, leading axis `batch_size`."""
    return self.sample_stacked(rng, (batch_size,))

  def sample_stacked(self, rng: np.random.Generator, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Batches with leading axes `shape`, e.g. (K, B) for K updates in one scan."""
    if self._size == 0:
      raise VidrlError("cannot sample from an empty replay buffer; add transitions first")
    idx = rng.integers(0, self._size, size=shape)
    return {k: v[idx] for k, v in self._data.items()}

  def state_dict(self) -> dict[str, np.ndarray]:
    """The stored transitions (in slot order) and the ring pointers, for `io.write_npz`."""
    out = {k: v[:self._size] for k, v in self._data.items()}
    out.update(capacity=np.int64(self.capacity), next=np.int64(self._next), size=np.int64(self._size))
    return out

  def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
    size = int(state["size"])
    if int(state["capacity"]) != self.capacity or state["obs"].shape[1:] != (self.obs_dim,) or \
        state["action"].shape[1:] != (self.action_dim,):
      raise VidrlError(f"the saved replay buffer (capacity {int(state['capacity'])}, obs {state['obs'].shape[1:]}, "
                       f"action {state['action'].shape[1:]}) does not fit this one (capacity {self.capacity}, "
                       f"obs ({self.obs_dim},), action ({self.action_dim},)); use a new workdir")
    for k in FIELDS:
      self._data[k][:size] = state[k]
    self._next, self._size = int(state["next"]), size

  def save(self, path: str, **extra: np.ndarray) -> None:
    """Atomic, uncompressed npz of `state_dict()` plus `extra` arrays (names must not clash)."""
    arrays = self.state_dict()
    clash = sorted(set(arrays) & set(extra))
    if clash:
      raise VidrlError(f"extra arrays {clash} clash with the replay buffer's own names; rename them")
    io.write_npz(path, {**arrays, **{k: np.asarray(v) for k, v in extra.items()}}, compress=False)

  def load(self, path: str) -> dict[str, np.ndarray]:
    """Restores from `save`'s file; returns the extra arrays saved with it."""
    with np.load(path) as f:
      state = {k: f[k] for k in f.files}
    self.load_state_dict(state)
    own = set(FIELDS) | {"capacity", "next", "size"}
    return {k: v for k, v in state.items() if k not in own}
