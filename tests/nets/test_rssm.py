"""The RSSM cell and its `observe` / `imagine` loops: shapes, scan against a Python loop, the `act` hook, the GRU;
categorical latents, `is_first` resets, a learned initial state, the action-free cell, imagination with a policy."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.rssm import RSSM, RSSMState, features, imagine, observe, zeros_state

DETER, STOCH, HIDDEN = 8, 4, 16
T, B, E, A = 5, 3, 6, 2
MODEL = RSSM(deter=DETER, stoch=STOCH, hidden=HIDDEN)
KEY = jax.random.key(0)
# Inputs from numpy (no eager per-op compiles), each from its own seeded generator.
EMBEDS = jnp.asarray(np.random.default_rng(0).standard_normal((T, B, E)), jnp.float32)
ACTIONS = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (T, B, A)), jnp.float32)
OBS_KEY = jax.random.key(7)

# One compile per entry point.
_observe_actions = jax.jit(lambda p, e, r, a: observe(MODEL, p, e, r, actions=a))
_imagine = jax.jit(lambda p, s, a, r: imagine(MODEL, p, s, r, actions=a)[:2])
_obs_step = jax.jit(lambda p, s, a, e, r: MODEL.apply(p, s, a, e, r, method=RSSM.obs_step))


def _zeros_state(batch: int = B) -> RSSMState:
  return RSSMState(jnp.zeros((batch, DETER)), jnp.zeros((batch, STOCH)))


@pytest.fixture(scope="module")
def params():
  """Random parameters of the cell's structure: kernels ~ N(0, 1 / fan_in), biases ~ N(0, 0.5^2) (non-zero, unlike
  the init's, so every bias is exercised). Drawn in numpy: jitting `init` costs seconds of threefry compiles."""
  shapes = jax.eval_shape(MODEL.init, KEY, _zeros_state(), ACTIONS[0], EMBEDS[0], KEY)
  rng = np.random.default_rng(2)
  draw = lambda s: jnp.asarray(rng.standard_normal(s.shape) * (s.shape[0] ** -0.5 if len(s.shape) == 2 else 0.5),
                               jnp.float32)
  return jax.tree.map(draw, shapes)


@pytest.fixture(scope="module")
def filtered(params):
  return _observe_actions(params, EMBEDS, OBS_KEY, ACTIONS)


def _assert_tree_close(a, b, atol=1e-5):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb) > 0
  for x, y in zip(la, lb):
    assert x.shape == y.shape
    np.testing.assert_allclose(x, y, atol=atol, rtol=1e-5)


def test_observe_shapes(filtered):
  f = filtered
  assert f.states.deter.shape == (T, B, DETER) and f.states.stoch.shape == (T, B, STOCH)
  for dist in (f.posterior, f.prior):
    assert dist.mean.shape == (T, B, STOCH) and dist.std.shape == (T, B, STOCH)
    assert np.all(np.asarray(dist.std) > 0)
  assert f.actions.shape == (T, B, A)
  np.testing.assert_array_equal(f.actions, ACTIONS)
  assert f.extras == {}
  assert features(f.states).shape == (T, B, DETER + STOCH)
  assert np.all(np.isfinite(np.asarray(features(f.states))))


def test_observe_scan_equals_python_loop(params, filtered):
  # observe: step_rngs = split(rng, T); at step t, (r_act, r_step) = split(step_rngs[t]); r_step samples s_t.
  state, outs = _zeros_state(), []
  for t, r in enumerate(jax.random.split(OBS_KEY, T)):
    _, r_step = jax.random.split(r)
    state, post, prior = _obs_step(params, state, ACTIONS[t], EMBEDS[t], r_step)
    outs.append((state, post, prior))
  stack = lambda i: jax.tree.map(lambda *x: jnp.stack(x), *[o[i] for o in outs])
  _assert_tree_close(filtered.states, stack(0))
  _assert_tree_close(filtered.posterior, stack(1))
  _assert_tree_close(filtered.prior, stack(2))


def test_observe_samples_the_posterior(filtered):
  # s_t is a draw of q (within 6 stds of its mean), not the mean itself.
  f = filtered
  assert not np.allclose(f.states.stoch, f.posterior.mean, atol=1e-3)
  z = (np.asarray(f.states.stoch) - np.asarray(f.posterior.mean)) / np.asarray(f.posterior.std)
  assert np.all(np.abs(z) < 6)


def test_observe_depends_on_rng_only_through_samples(params, filtered):
  other = _observe_actions(params, EMBEDS, jax.random.key(8), ACTIONS)
  np.testing.assert_allclose(other.states.deter[0], filtered.states.deter[0], atol=1e-6)
  assert not np.allclose(other.states.stoch, filtered.states.stoch, atol=1e-3)


def _act(state, embed, rng):
  """Deterministic actions read off the embedding (so they vary with t); records what `act` was given."""
  return embed[..., :A], {"deter": state.deter, "stoch": state.stoch, "rng": jax.random.key_data(rng)}


@pytest.fixture(scope="module")
def filtered_act(params):
  return jax.jit(lambda p, e, r: observe(MODEL, p, e, r, act=_act))(params, EMBEDS, OBS_KEY)


def test_observe_with_act_equals_observe_with_its_actions(params, filtered_act):
  expected = _observe_actions(params, EMBEDS, OBS_KEY, EMBEDS[..., :A])
  np.testing.assert_array_equal(filtered_act.actions, EMBEDS[..., :A])
  _assert_tree_close(filtered_act.states, expected.states, atol=1e-6)
  _assert_tree_close(filtered_act.posterior, expected.posterior, atol=1e-6)
  _assert_tree_close(filtered_act.prior, expected.prior, atol=1e-6)


def test_act_receives_the_previous_state(filtered_act):
  f = filtered_act
  assert f.extras["deter"].shape == (T, B, DETER) and f.extras["stoch"].shape == (T, B, STOCH)
  # What `act` was given is the state itself, passed on without arithmetic: exact.
  np.testing.assert_array_equal(f.extras["deter"][0], 0.0)
  np.testing.assert_array_equal(f.extras["stoch"][0], 0.0)
  np.testing.assert_array_equal(f.extras["deter"][1:], f.states.deter[:-1])
  np.testing.assert_array_equal(f.extras["stoch"][1:], f.states.stoch[:-1])


def test_act_gets_a_fresh_rng_every_step(filtered_act):
  keys = np.asarray(filtered_act.extras["rng"]).reshape(T, -1)
  assert len({k.tobytes() for k in keys}) == T
  # Not the rng of the posterior sample either.
  step_keys = {np.asarray(jax.random.key_data(jax.random.split(r)[1])).tobytes()
               for r in jax.random.split(OBS_KEY, T)}
  assert not {k.tobytes() for k in keys} & step_keys


def test_observe_starts_from_initial(params):
  rng = np.random.default_rng(3)
  init = RSSMState(jnp.asarray(rng.standard_normal((B, DETER)), jnp.float32),
                   jnp.asarray(rng.standard_normal((B, STOCH)), jnp.float32))
  f = jax.jit(lambda p, e, r, s: observe(MODEL, p, e, r, act=_act, initial=s))(params, EMBEDS, OBS_KEY, init)
  np.testing.assert_array_equal(f.extras["deter"][0], init.deter)
  np.testing.assert_array_equal(f.extras["stoch"][0], init.stoch)
  r_step = jax.random.split(jax.random.split(OBS_KEY, T)[0])[1]
  state1, post1, _ = _obs_step(params, init, EMBEDS[0, :, :A], EMBEDS[0], r_step)
  _assert_tree_close(jax.tree.map(lambda x: x[0], f.states), state1, atol=1e-6)
  _assert_tree_close(jax.tree.map(lambda x: x[0], f.posterior), post1, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{}, {"actions": ACTIONS, "act": _act}])
def test_observe_needs_exactly_one_of_actions_and_act(params, kwargs):
  with pytest.raises(ValueError, match="exactly one"):
    observe(MODEL, params, EMBEDS, OBS_KEY, **kwargs)


def test_imagine_shapes_and_determinism(params, filtered):
  horizon = T  # One compile of `_imagine` for both imagine tests.
  start = jax.tree.map(lambda x: x[-1], filtered.states)
  states, priors = _imagine(params, start, ACTIONS[:horizon], KEY)
  assert states.deter.shape == (horizon, B, DETER) and states.stoch.shape == (horizon, B, STOCH)
  assert priors.mean.shape == (horizon, B, STOCH) and priors.std.shape == (horizon, B, STOCH)
  again = _imagine(params, start, ACTIONS[:horizon], KEY)
  jax.tree.map(np.testing.assert_array_equal, (states, priors), again)  # the same program twice: bit for bit
  other_states, _ = _imagine(params, start, ACTIONS[:horizon], jax.random.key(1))
  np.testing.assert_allclose(other_states.deter[0], states.deter[0], atol=1e-6)
  assert not np.allclose(other_states.stoch, states.stoch, atol=1e-3)


def test_imagine_first_prior_equals_observe_prior(params, filtered):
  # From the same initial state and action, p(s_1 | h_1) does not depend on the embedding or the rng.
  _, priors = _imagine(params, _zeros_state(), ACTIONS, jax.random.key(1))
  _assert_tree_close(jax.tree.map(lambda x: x[0], priors), jax.tree.map(lambda x: x[0], filtered.prior), 1e-6)


def _flax_gru_params(gru: dict) -> dict:
  """The cell's params as Flax `nn.GRUCell` params. The fused cell holds `input` / `hidden` Dense layers whose
  3F outputs are the (r, z, n) gates (PyTorch's layout); Flax has no hidden bias on r and z, so those fold into
  the input biases (the sum is what enters the sigmoid)."""
  if "input" not in gru:
    return gru
  f = DETER
  cols = lambda a, g: a[..., g * f:(g + 1) * f]
  wi, bi, wh, bh = gru["input"]["kernel"], gru["input"]["bias"], gru["hidden"]["kernel"], gru["hidden"]["bias"]
  return {
      "ir": {"kernel": cols(wi, 0), "bias": cols(bi, 0) + cols(bh, 0)}, "hr": {"kernel": cols(wh, 0)},
      "iz": {"kernel": cols(wi, 1), "bias": cols(bi, 1) + cols(bh, 1)}, "hz": {"kernel": cols(wh, 1)},
      "in": {"kernel": cols(wi, 2), "bias": cols(bi, 2)}, "hn": {"kernel": cols(wh, 2), "bias": cols(bh, 2)},
  }


def test_gru_update_matches_flax_gru_cell(params, filtered):
  # The biases are random (see `params`), so the hidden bias inside the reset gate's product is exercised.
  f = filtered
  cell = jax.jit(nn.GRUCell(features=DETER).apply)
  gru_params = {"params": _flax_gru_params(params["params"]["gru"])}
  # h_1 = GRU(h_0 = 0, [s_0 = 0, a_0]).
  h1, out = cell(gru_params, jnp.zeros((B, DETER)), jnp.concatenate([jnp.zeros((B, STOCH)), ACTIONS[0]], -1))
  np.testing.assert_allclose(f.states.deter[0], h1, atol=1e-5)
  assert not np.allclose(h1, 0.0, atol=1e-2)
  # h_2 = GRU(h_1, [s_1, a_1]) with s_1 the posterior sample.
  h2, _ = cell(gru_params, h1, jnp.concatenate([f.states.stoch[0], ACTIONS[1]], -1))
  np.testing.assert_allclose(f.states.deter[1], h2, atol=1e-5)


# Categorical latents, is_first resets, a learned initial state, the action-free cell and imagination with a policy
# (DreamerV2 / APV), on a small categorical cell with a learned initial state: 3 variables x 4 classes.
CAT = RSSM(deter=DETER, stoch=3, classes=4, hidden=HIDDEN, latent="categorical", initial="learned")


@pytest.fixture(scope="module")
def cat_params():
  shapes = jax.eval_shape(CAT.init, KEY, zeros_state(CAT, (B,)), ACTIONS[0], EMBEDS[0], KEY)
  rng = np.random.default_rng(4)
  return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape) * 0.5, jnp.float32), shapes)


_cat_observe = jax.jit(lambda p, e, r, a, f: observe(CAT, p, e, r, actions=a, is_first=f))


def test_categorical_states_are_one_hot_with_straight_through_gradients(cat_params):
  first = np.zeros((T, B), bool)
  f = _cat_observe(cat_params, EMBEDS, OBS_KEY, ACTIONS, jnp.asarray(first))
  assert f.states.stoch.shape == (T, B, 12) and f.posterior.logits.shape == f.prior.logits.shape == (T, B, 3, 4)
  onehot = np.asarray(f.states.stoch).reshape(T, B, 3, 4)
  np.testing.assert_array_equal(onehot.sum(-1), 1.0)
  assert set(np.unique(onehot)) == {0.0, 1.0}
  weights = jnp.asarray(np.random.default_rng(5).standard_normal(12), jnp.float32)
  grads = jax.grad(lambda p: jnp.sum(_cat_observe(p, EMBEDS, OBS_KEY, ACTIONS, jnp.asarray(first)).states.stoch
                                     * weights))(cat_params)["params"]
  assert np.abs(np.asarray(grads["posterior_logits"]["out"]["kernel"])).sum() > 1e-3   # through the samples


def test_is_first_resets_to_the_learned_initial_state(cat_params):
  """A window spanning two episodes: at the second's first frame the filter starts afresh (the learned h_0 = tanh(w),
  s_0 the prior's mode, a zero previous action), so its posterior there is that of the second episode alone."""
  first = np.zeros((T, B), bool)
  first[0] = first[3] = True
  f = _cat_observe(cat_params, EMBEDS, OBS_KEY, ACTIONS, jnp.asarray(first))
  alone = _cat_observe(cat_params, jnp.concatenate([EMBEDS[3:], EMBEDS[:3]]), OBS_KEY, ACTIONS,
                       jnp.asarray(np.eye(T, 1, dtype=bool).repeat(B, 1)))
  np.testing.assert_allclose(f.posterior.logits[3], alone.posterior.logits[0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(f.states.deter[3], alone.states.deter[0], rtol=1e-5, atol=1e-6)
  assert not np.allclose(f.posterior.logits[2], alone.posterior.logits[0], atol=1e-3)
  h0 = np.tanh(np.asarray(cat_params["params"]["initial_deter"]))
  init = CAT.apply(cat_params, (B,), method=RSSM.initial_state)
  np.testing.assert_allclose(init.deter, np.broadcast_to(h0, (B, DETER)), rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(np.asarray(init.stoch).reshape(B, 3, 4).sum(-1), 1.0)   # the prior's mode


def test_no_is_first_equals_all_false(params, filtered):
  none_first = jax.jit(lambda p, e, r, a, f: observe(MODEL, p, e, r, actions=a, is_first=f))(
      params, EMBEDS, OBS_KEY, ACTIONS, jnp.zeros((T, B), bool))
  _assert_tree_close(none_first.states, filtered.states, atol=1e-6)
  _assert_tree_close(none_first.posterior, filtered.posterior, atol=1e-6)


def test_action_free_cell_filters_without_actions():
  model = RSSM(deter=DETER, stoch=STOCH, hidden=HIDDEN)
  p = model.init(KEY, zeros_state(model, (B,)), jnp.zeros((B, 0)), EMBEDS[0], KEY)
  assert p["params"]["gru"]["input"]["kernel"].shape == (STOCH, 3 * DETER)   # s only: no action columns
  f = jax.jit(lambda p, e, r: observe(model, p, e, r, actions=jnp.zeros((T, B, 0))))(p, EMBEDS, OBS_KEY)
  assert f.states.deter.shape == (T, B, DETER) and np.isfinite(np.asarray(f.states.deter)).all()


def test_imagine_with_a_policy_inside_the_scan(params, filtered):
  """The policy sees each imagined state in turn; with the actions it returns, the open-loop rollout is the same;
  its parameters get a gradient through the imagined dynamics (Dreamer's dynamics backpropagation)."""
  start = jax.tree.map(lambda x: x[-1], filtered.states)
  w = jnp.asarray(np.random.default_rng(6).standard_normal((DETER + STOCH, A)) * 0.3, jnp.float32)

  def rollout(w, actions=None):
    policy = lambda state, r: (jnp.tanh(features(state) @ w), {"deter": state.deter})
    if actions is not None:
      return imagine(MODEL, params, start, jax.random.key(3), actions=actions)
    return imagine(MODEL, params, start, jax.random.key(3), policy=policy, horizon=4)

  closed = jax.jit(rollout)(w)
  assert closed.actions.shape == (4, B, A) and closed.states.deter.shape == (4, B, DETER)
  np.testing.assert_array_equal(closed.extras["deter"][0], start.deter)           # a_0 chosen in `start`
  np.testing.assert_array_equal(closed.extras["deter"][1:], closed.states.deter[:-1])
  opened = jax.jit(rollout)(w, closed.actions)
  _assert_tree_close(opened.states, closed.states, atol=1e-6)
  grad = jax.grad(lambda w: jnp.sum(features(jax.jit(rollout)(w).states)))(w)
  assert np.abs(np.asarray(grad)).sum() > 1e-3


def test_unknown_latent_or_initial_is_refused():
  with pytest.raises(VidrlError, match="pick latent"):
    RSSM(deter=4, stoch=2, latent="beta").init(KEY, zeros_state(MODEL, (1,)), jnp.zeros((1, 0)),
                                                jnp.zeros((1, 3)), KEY)
