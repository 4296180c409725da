"""The one optimiser factory: a trainable mask freezes leaves; PPO's settings give ppo2's clip + Adam + linear decay."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vidrl_jax.rl.ppo import ppo_config, ppo_optim_config
from vidrl_jax.train.optim import Start, make_optimizer, optim_config, trainable_mask

PARAMS = {"torso": {"kernel": jnp.ones((2, 2))}, "head": {"kernel": jnp.ones((2,)), "bias": jnp.zeros(())}}
GRADS = {"torso": {"kernel": jnp.full((2, 2), 0.5)}, "head": {"kernel": jnp.asarray([1.0, -2.0]),
                                                             "bias": jnp.asarray(3.0)}}


def _run(tx, steps=3):
  params, state, out = PARAMS, tx.init(PARAMS), []
  for _ in range(steps):
    updates, state = tx.update(GRADS, state, params)
    params = optax.apply_updates(params, updates)
    out.append(params)
  return out, state


def test_trainable_mask_freezes_leaves():
  mask = trainable_mask(PARAMS, lambda path: not path.startswith("torso/"))
  assert mask == {"torso": {"kernel": False}, "head": {"kernel": True, "bias": True}}
  masked, state = _run(make_optimizer(optim_config(lr=0.1), 10, mask))
  full, _ = _run(make_optimizer(optim_config(lr=0.1), 10))
  np.testing.assert_array_equal(masked[-1]["torso"]["kernel"], PARAMS["torso"]["kernel"])   # frozen
  for a, b in zip(jax.tree.leaves(masked[-1]["head"]), jax.tree.leaves(full[-1]["head"])):   # the same ops on
    np.testing.assert_array_equal(a, b)                                                     # these leaves: exact
  # Adam's step 1 moves each trained scalar by lr * sign(grad) (bias-corrected m / sqrt(v) = +-1, eps aside; float32's
  # 1 - 0.999 in the correction is 1.3e-5 off, the step 7e-7 off lr: atol 1e-5).
  np.testing.assert_allclose(masked[0]["head"]["kernel"], [0.9, 1.1], rtol=1e-6, atol=1e-5)
  assert not any(x.shape == (2, 2) for x in jax.tree.leaves(state))                          # no frozen moments


def test_ppo_settings_are_clip_adam_linear_decay():
  config = ppo_config(lr=0.01, max_grad_norm=0.5, adam_eps=1e-5, anneal_lr=True)
  ours, _ = _run(make_optimizer(ppo_optim_config(config), 4))
  reference = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(optax.linear_schedule(0.01, 0.0, 4), eps=1e-5))
  theirs, _ = _run(reference)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_array_equal(a, b)
  constant, _ = _run(make_optimizer(ppo_optim_config(ppo_config(lr=0.01, anneal_lr=False)), 4))
  reference = optax.chain(optax.clip_by_global_norm(0.5), optax.adam(0.01, eps=1e-5))
  for a, b in zip(jax.tree.leaves(constant), jax.tree.leaves(_run(reference)[0])):
    np.testing.assert_array_equal(a, b)


def test_int_leaves_start_learning_at_that_update_with_moments_kept():
  mask = trainable_mask(PARAMS, lambda path: False if path.startswith("torso/") else (2 if "kernel" in path else 0))
  assert mask == {"torso": {"kernel": False}, "head": {"kernel": Start(2), "bias": Start(0)}}
  staggered, _ = _run(make_optimizer(optim_config(lr=0.1, decay="linear"), 10, mask), steps=4)
  full, _ = _run(make_optimizer(optim_config(lr=0.1, decay="linear"), 10), steps=4)
  for i in range(4):
    np.testing.assert_array_equal(staggered[i]["torso"]["kernel"], PARAMS["torso"]["kernel"])
    np.testing.assert_array_equal(staggered[i]["head"]["bias"], full[i]["head"]["bias"])     # starts at once
  np.testing.assert_array_equal(staggered[0]["head"]["kernel"], PARAMS["head"]["kernel"])    # updates 0, 1: still
  np.testing.assert_array_equal(staggered[1]["head"]["kernel"], PARAMS["head"]["kernel"])
  # From update 2 on it moves as the ungated optimiser's updates 2, 3 (same moments and schedule position); the
  # differences of O(1) params carry their rounding (1 ulp = 1.2e-7): atol.
  np.testing.assert_allclose(staggered[3]["head"]["kernel"] - PARAMS["head"]["kernel"],
                             full[3]["head"]["kernel"] - full[1]["head"]["kernel"], rtol=1e-5, atol=1e-6)


def test_start_scales_the_learning_rate():
  mask = trainable_mask(PARAMS, lambda path: Start(0, 0.25) if path.startswith("torso/") else True)
  scaled, _ = _run(make_optimizer(optim_config(lr=0.1), 10, mask), steps=2)
  full, _ = _run(make_optimizer(optim_config(lr=0.1), 10), steps=2)
  np.testing.assert_allclose(scaled[1]["torso"]["kernel"] - 1.0, 0.25 * (full[1]["torso"]["kernel"] - 1.0), rtol=1e-5,
                             atol=1e-6)   # differences of O(1) params
  np.testing.assert_array_equal(scaled[1]["head"]["kernel"], full[1]["head"]["kernel"])
