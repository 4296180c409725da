"""Target networks (`rl.target`): the Polyak average by hand, DreamerV2's periodic copy inside one compiled update,
on trees of several leaves; SAC uses this one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.errors import VidrlError
from vidrl_jax.rl import sac, target


def _tree(w, b, s):
  """A params-like tree of several leaves and shapes: a matrix, a vector, a scalar, nested in dicts and a tuple."""
  return {"dense": {"kernel": jnp.asarray(w, jnp.float32), "bias": jnp.asarray(b, jnp.float32)},
          "scale": (jnp.asarray(s, jnp.float32),)}


def test_polyak_by_hand_is_exact():
  old = _tree([[8.0, -8.0], [0.0, 16.0]], [4.0, 1.0], 2.0)
  online = _tree([[0.0, 8.0], [8.0, -16.0]], [-4.0, 9.0], 10.0)
  # 0.125 * online + 0.875 * target; dyadic numbers, so every product and sum is exact in float32.
  new = jax.jit(target.polyak)(old, online, 0.125)
  assert jax.tree.structure(new) == jax.tree.structure(old)
  np.testing.assert_array_equal(new["dense"]["kernel"], [[7.0, -6.0], [1.0, 12.0]])
  np.testing.assert_array_equal(new["dense"]["bias"], [3.0, 2.0])
  np.testing.assert_array_equal(new["scale"][0], 3.0)
  for leaf_new, leaf_old in zip(jax.tree.leaves(new), jax.tree.leaves(old)):
    assert leaf_new.dtype == leaf_old.dtype and leaf_new.shape == leaf_old.shape
  # tau = 1 is a copy, tau = 0 keeps the target.
  for tau, want in ((1.0, online), (0.0, old)):
    for got, expected in zip(jax.tree.leaves(target.polyak(old, online, tau)), jax.tree.leaves(want)):
      np.testing.assert_array_equal(got, expected)


def test_sac_uses_the_shared_polyak():
  assert sac.polyak is target.polyak


def _online(step):
  """Online params that change every step (a different value per leaf and per step)."""
  step = jnp.asarray(step, jnp.float32)
  return _tree(jnp.full((2, 2), step), jnp.stack([step, -step]), 3.0 * step + 1.0)


def test_periodic_update_copies_only_on_multiples_of_the_period():
  traces = []

  @jax.jit
  def update(old, step):
    traces.append(1)
    return target.periodic_update(old, _online(step), step, 4)

  slow = _online(-1)
  copied_at = -1
  for step in range(11):
    slow = update(slow, jnp.asarray(step, jnp.int32))
    if step % 4 == 0:
      copied_at = step
    for got, want in zip(jax.tree.leaves(slow), jax.tree.leaves(_online(copied_at))):
      np.testing.assert_array_equal(got, want)   # a copy: exact
  assert copied_at == 8 and len(traces) == 1     # copies at 0, 4, 8; one compilation for every step


def test_dreamerv2_slow_critic_in_a_scan():
  """slow_target_update 100, slow_target_fraction 1 over 250 updates in one lax.scan: the last copy is of step 200."""
  def body(slow, step):
    return target.periodic_update(slow, _online(step), step, 100), None

  slow, _ = jax.jit(lambda s: jax.lax.scan(body, s, jnp.arange(250, dtype=jnp.int32)))(_online(-1))
  for got, want in zip(jax.tree.leaves(slow), jax.tree.leaves(_online(200))):
    np.testing.assert_array_equal(got, want)


def test_periodic_update_with_a_fraction_moves_part_way_on_copy_steps():
  old = _tree([[8.0, -8.0], [0.0, 16.0]], [4.0, 1.0], 2.0)
  online = _tree([[0.0, 8.0], [8.0, -16.0]], [-4.0, 9.0], 10.0)
  update = jax.jit(target.periodic_update, static_argnames=("period", "fraction"))
  moved = update(old, online, jnp.asarray(6, jnp.int32), period=3, fraction=0.125)
  kept = update(old, online, jnp.asarray(7, jnp.int32), period=3, fraction=0.125)
  for got, want in zip(jax.tree.leaves(moved), jax.tree.leaves(target.polyak(old, online, 0.125))):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(jax.tree.leaves(kept), jax.tree.leaves(old)):
    np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(moved["scale"][0], 3.0)   # 0.125 * 10 + 0.875 * 2, by hand


@pytest.mark.parametrize("period, fraction", [(0, 1.0), (5, 0.0), (5, 1.5)])
def test_periodic_update_rejects_bad_settings(period, fraction):
  tree = _online(0)
  with pytest.raises(VidrlError, match="period|fraction"):
    target.periodic_update(tree, tree, 0, period, fraction)
