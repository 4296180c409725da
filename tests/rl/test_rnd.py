"""RND as a SAC aux: the target stays fixed, the predictor learns, the bonus's scale, and it runs inside sac.update."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.mlp import MLP
from vidrl_jax.rl import rnd, sac

OBS, ACT, B = 5, 2, 32


def _batch(seed: int = 0) -> dict:
  r = np.random.default_rng(seed)
  return dict(obs=jnp.asarray(r.normal(size=(B, OBS)), jnp.float32), action=jnp.asarray(r.uniform(-1, 1, (B, ACT)),
              jnp.float32), reward=jnp.asarray(r.normal(size=B), jnp.float32),
              next_obs=jnp.asarray(r.normal(size=(B, OBS)), jnp.float32), discount=jnp.ones(B, jnp.float32))


def _setup(**rnd_overrides):
  config = sac.sac_config(actor_hidden=(16,), critic_hidden=(16,))
  aux = rnd.make_aux(rnd.rnd_config(hidden=(16,), out=8, lr=3e-3, **rnd_overrides))
  return config, aux, sac.init(jax.random.PRNGKey(0), OBS, ACT, config, aux)


def test_target_fixed_predictor_learns_inside_sac_update():
  config, aux, state = _setup()
  target0, predictor0 = state.aux_params["target"], state.aux_params["predictor"]
  cfg = rnd.rnd_config(hidden=(16,), out=8)
  batch = _batch()
  update = jax.jit(lambda s, b, k: sac.update(s, b, k, config, aux))
  err0 = float(jnp.mean(rnd.prediction_error(state.aux_params, batch["next_obs"], cfg)))
  for i in range(60):   # the same batch again and again
    state, metrics = update(state, batch, jax.random.PRNGKey(i))
  err = float(jnp.mean(rnd.prediction_error(state.aux_params, batch["next_obs"], cfg)))
  jax.tree.map(np.testing.assert_array_equal, state.aux_params["target"], target0)
  assert not np.allclose(state.aux_params["predictor"]["params"]["out"]["kernel"],
                         predictor0["params"]["out"]["kernel"])
  assert err < 0.2 * err0
  assert {"aux/loss/rnd", "aux/bonus", "critic_loss"} <= set(metrics)
  assert np.isfinite(float(metrics["critic_loss"]))
  assert float(metrics["aux/bonus"]) > 0


def test_bonus_added_to_reward_with_the_right_scale():
  _, aux, state = _setup(beta=0.3)
  batch = _batch(1)
  out = aux.relabel(state.aux_params, lambda x: x, batch, jax.random.PRNGKey(0))
  target, predictor = rnd.networks(rnd.rnd_config(hidden=(16,), out=8))
  p = state.aux_params
  err = np.mean((np.asarray(predictor.apply(p["predictor"], batch["next_obs"]))
                 - np.asarray(target.apply(p["target"], batch["next_obs"]))) ** 2, axis=-1)
  expected = 0.3 * err / (err.std() + 1e-8)
  np.testing.assert_allclose(np.asarray(out["reward"]) - np.asarray(batch["reward"]), expected, rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(out[rnd.BONUS], expected, rtol=1e-4, atol=1e-6)
  assert float(jnp.std(out[rnd.BONUS])) == pytest.approx(0.3, rel=1e-3)   # batch-normalised: std beta
  for k in ("obs", "action", "next_obs", "discount"):
    np.testing.assert_array_equal(out[k], batch[k])


def test_rnd_leaves_an_encoder_untrained():
  """With an encoder, RND reads stop-gradient features: its loss has zero gradient for the encoder."""
  _, aux, state = _setup()
  enc = MLP((8,), out=OBS)
  enc_params = enc.init(jax.random.PRNGKey(3), jnp.zeros((1, OBS)))
  batch = _batch(2)
  batch = aux.relabel(state.aux_params, lambda x: enc.apply(enc_params, x), batch, jax.random.PRNGKey(0))

  def total(ep, ap):
    terms, _ = aux.loss(ap, lambda x: enc.apply(ep, x), batch, jax.random.PRNGKey(0))
    return jnp.mean(terms["rnd"])

  g_enc, g_aux = jax.grad(total, argnums=(0, 1))(enc_params, state.aux_params)
  assert all(float(jnp.max(jnp.abs(g))) == 0 for g in jax.tree.leaves(g_enc))
  assert all(float(jnp.max(jnp.abs(g))) == 0 for g in jax.tree.leaves(g_aux["target"]))
  assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(g_aux["predictor"]))


def test_rnd_config_errors():
  with pytest.raises(VidrlError):
    rnd.make_aux(rnd.rnd_config(beta=-1.0))


def test_rnd_with_a_state_encoder_inside_sac_update():
  """SAC's shared encoder path: RND's nets are built on the encoder's features and the update runs."""
  config = sac.sac_config(actor_hidden=(16,), critic_hidden=(16,), state_encoder_hidden=(12,))
  aux = rnd.make_aux(rnd.rnd_config(hidden=(16,), out=8))
  state = sac.init(jax.random.PRNGKey(0), OBS, ACT, config, aux)
  assert state.aux_params["target"]["params"]["dense0"]["kernel"].shape == (12, 16)   # features, not raw obs
  new, metrics = jax.jit(lambda s, b, k: sac.update(s, b, k, config, aux))(state, _batch(), jax.random.PRNGKey(1))
  jax.tree.map(np.testing.assert_array_equal, new.aux_params["target"], state.aux_params["target"])
  assert np.isfinite(float(metrics["aux/loss/rnd"])) and float(metrics["aux/bonus"]) > 0
