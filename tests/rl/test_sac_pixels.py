"""SAC with the shared image encoder: `act`, the auxiliary-loss hook (gradients, weight 0 = plain SAC, relabel)
and a pixel contextual bandit it must learn."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vidrl_jax.distributions import TanhNormal
from vidrl_jax.rl import sac

SPEC = {"image": ((8, 8, 3), np.uint8), "state": ((2,), np.float32)}
A = 2


def _config(**kw):
  return sac.sac_config(actor_hidden=(16,), critic_hidden=(16,), encoder_filters=(4,), encoder_kernel=3,
                        augment_pad=0, **kw)


def _batch(n=6, seed=0):
  r = np.random.default_rng(seed)
  obs = lambda: {"image": jnp.asarray(r.integers(0, 256, (n, 8, 8, 3)), jnp.uint8),
                 "state": jnp.asarray(r.normal(size=(n, 2)), jnp.float32)}
  return dict(obs=obs(), action=jnp.asarray(r.uniform(-1, 1, (n, A)), jnp.float32),
              reward=jnp.asarray(r.normal(size=n), jnp.float32), next_obs=obs(), discount=jnp.ones(n, jnp.float32))


def _probe_aux(weight, relabel=None):
  """A dummy auxiliary loss: a linear probe of the reward on the encoder features, (f . w - r)^2 per sample."""
  def loss(params, encode, batch, rng):
    err = encode(batch["obs"]) @ params["w"] - batch["reward"]
    return {"probe": jnp.square(err)}, {"probe_abs": jnp.mean(jnp.abs(err))}
  return sac.Aux(init=lambda rng, feat, a: {"w": jnp.full((feat.shape[-1],), 0.1)}, loss=loss,
                 weights={"probe": weight}, optimizer=optax.adam(1e-2), relabel=relabel)


def test_act_deterministic_is_tanh_mean_and_samples_follow_the_rng():
  config = sac.sac_config(actor_hidden=(8,))
  state = sac.init(jax.random.PRNGKey(0), 3, A, config)
  obs = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)
  p = state.actor_params["params"]["torso"]
  h = np.maximum(np.asarray(obs) @ np.asarray(p["dense0"]["kernel"]) + np.asarray(p["dense0"]["bias"]), 0)
  out = h @ np.asarray(p["out"]["kernel"]) + np.asarray(p["out"]["bias"])
  params = sac.policy_params(state)
  np.testing.assert_allclose(sac.act(params, obs, jax.random.PRNGKey(1), True, config, A), np.tanh(out[:, :A]),
                             rtol=1e-5, atol=1e-6)
  log_std = -5.0 + 3.5 * (np.tanh(out[:, A:]) + 1.0)
  want = TanhNormal(jnp.asarray(out[:, :A]), jnp.exp(jnp.asarray(log_std))).sample(jax.random.PRNGKey(1))
  got = sac.act(params, obs, jax.random.PRNGKey(1), False, config, A)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # With the image encoder: dict observations, actions in (-1, 1), the mode differs from a sample.
  config = _config()
  state = sac.init(jax.random.PRNGKey(0), SPEC, A, config)
  obs = _batch()["obs"]
  mode = sac.act(sac.policy_params(state), obs, jax.random.PRNGKey(1), True, config, A)
  sample = sac.act(sac.policy_params(state), obs, jax.random.PRNGKey(1), False, config, A)
  assert mode.shape == sample.shape == (6, A) and float(jnp.max(jnp.abs(sample))) < 1
  assert not np.allclose(mode, sample)


def test_aux_gradient_reaches_encoder_and_its_params_and_weight_zero_is_plain_sac():
  config, batch, rng = _config(critic_lr=1e-3), _batch(), jax.random.PRNGKey(3)
  plain = sac.init(jax.random.PRNGKey(0), SPEC, A, config)
  step = lambda aux: jax.jit(lambda s, b, k: sac.update(s, b, k, config, aux))
  new_plain, m_plain = step(None)(plain, batch, rng)
  for weight in (0.0, 1e4):
    aux = _probe_aux(weight)
    state = sac.init(jax.random.PRNGKey(0), SPEC, A, config, aux)
    for name in ("actor_params", "critic_params", "encoder_params"):   # aux params do not shift the other inits
      jax.tree.map(np.testing.assert_array_equal, getattr(state, name), getattr(plain, name))
    new, metrics = step(aux)(state, batch, rng)
    assert float(metrics["aux/loss/probe"]) > 0 and "aux/probe_abs" in metrics
    # The aux term alone, differentiated by hand: its gradient wrt the encoder and wrt w.
    def probe(enc, w):
      feat = sac._encode(config, enc, batch["obs"])
      return weight * jnp.mean(jnp.square(feat @ w - batch["reward"]))
    g_enc, g_w = jax.jit(jax.grad(probe, argnums=(0, 1)))(state.encoder_params, state.aux_params["w"])
    step_enc = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), new.encoder_params, state.encoder_params)
    if weight == 0:   # the same update by two programs: float32 rounding (a leaked aux step would be ~lr = 1e-3)
      for name in ("actor_params", "critic_params", "encoder_params", "target_encoder_params", "log_alpha"):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), getattr(new, name),
                     getattr(new_plain, name))
      for k in sac.SAC_METRICS:
        np.testing.assert_allclose(metrics[k], m_plain[k], rtol=1e-5, atol=1e-6)
      np.testing.assert_array_equal(new.aux_params["w"], state.aux_params["w"])   # zero gradient, no step
    else:
      # Adam's first step is -lr * sign(gradient): the encoder follows the (dominant) aux gradient, w its own.
      agree = [np.mean(np.sign(s) == -np.sign(np.asarray(g))) for s, g in
               zip(jax.tree.leaves(step_enc), jax.tree.leaves(g_enc)) if np.asarray(g).size > 1]
      assert min(agree) > 0.9, agree
      np.testing.assert_allclose(new.aux_params["w"] - state.aux_params["w"], -1e-2 * np.sign(g_w), atol=1e-6)
      assert not np.allclose(new.encoder_params["params"]["conv"]["conv0"]["kernel"],
                             new_plain.encoder_params["params"]["conv"]["conv0"]["kernel"])


def test_relabel_writes_the_batch_the_sac_losses_see():
  config, rng = _config(), jax.random.PRNGKey(5)
  batch = _batch()
  batch["video"] = _batch(seed=1)["obs"]                 # an extra, action-free half

  def relabel(params, encode, b, rng):                   # actions from the encoder's features of the extra half
    out = dict(b, action=jnp.tanh(encode(b["video"])[:, :A] * params["w"][:A]))
    return out

  aux = _probe_aux(0.0, relabel)
  state = sac.init(jax.random.PRNGKey(0), SPEC, A, config, aux)
  _, metrics = jax.jit(lambda s, b, k: sac.update(s, b, k, config, aux))(state, batch, rng)
  feat = jax.jit(lambda p, o: sac._encode(config, p, o))(state.encoder_params, batch["video"])
  by_hand = dict(batch, action=jnp.tanh(feat[:, :A] * state.aux_params["w"][:A]))
  plain = sac.init(jax.random.PRNGKey(0), SPEC, A, config)
  _, want = jax.jit(lambda s, b, k: sac.update(s, b, k, config))(plain, by_hand, rng)
  for k in sac.SAC_METRICS:
    np.testing.assert_allclose(metrics[k], want[k], rtol=1e-5, atol=1e-6)
  _, unrelabelled = jax.jit(lambda s, b, k: sac.update(s, b, k, config))(plain, batch, rng)
  assert not np.isclose(float(metrics["critic_loss"]), float(unrelabelled["critic_loss"]))


def _bandit_images(colour: np.ndarray, r: np.random.Generator) -> np.ndarray:
  """12x12 noise images with a 6x6 square in the middle, red (context 0) or blue (context 1)."""
  img = r.integers(0, 40, (len(colour), 12, 12, 3)).astype(np.uint8)
  img[:, 3:9, 3:9] = np.where(colour[:, None, None, None] == 0, [220, 20, 20], [20, 20, 220]).astype(np.uint8)
  return img


def test_pixel_sac_learns_a_colour_bandit():
  """One step per episode: reward -(a - target)^2 with target -0.6 for a red square, +0.6 for a blue one; only
  the image tells them apart (a constant action scores at best -0.36, uniform random actions -0.69)."""
  r = np.random.default_rng(0)
  n, K, B = 512, 300, 64
  colour = r.integers(0, 2, n)
  target = np.where(colour == 0, -0.6, 0.6)
  action = r.uniform(-1, 1, (n, 1)).astype(np.float32)
  images = _bandit_images(colour, r)
  data = dict(obs={"image": images}, action=action, reward=-np.square(action[:, 0] - target).astype(np.float32),
              next_obs={"image": images}, discount=np.zeros(n, np.float32))
  idx = r.integers(0, n, (K, B))
  batches = jax.tree.map(lambda x: jnp.asarray(x[idx]), data)
  config = sac.sac_config(actor_hidden=(64, 64), critic_hidden=(64, 64), encoder_filters=(8, 8), encoder_kernel=3,
                          augment_pad=2, actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3)
  state = sac.init(jax.random.PRNGKey(0), {"image": ((12, 12, 3), np.uint8)}, 1, config)
  state, metrics = sac.make_update_burst(config)(state, batches, jax.random.PRNGKey(1))
  assert np.all(np.isfinite(np.asarray(metrics["critic_loss"])))
  test_colour = np.repeat([0, 1], 50)
  obs = {"image": jnp.asarray(_bandit_images(test_colour, np.random.default_rng(1)))}
  greedy = np.asarray(sac.act(sac.policy_params(state), obs, jax.random.PRNGKey(0), True, config, 1))[:, 0]
  reward = -np.square(greedy - np.where(test_colour == 0, -0.6, 0.6))
  assert reward[:50].mean() > -0.15 and reward[50:].mean() > -0.15, (greedy[:5], greedy[-5:], reward.mean())


def test_aux_on_vector_observations_sees_the_states_themselves():
  """No encoder (RLV's state tasks): `encode` is the identity, the aux params train, SAC's own nets are untouched."""
  config = sac.sac_config(actor_hidden=(8,), critic_hidden=(8,))
  r = np.random.default_rng(0)
  batch = dict(obs=jnp.asarray(r.normal(size=(6, 3)), jnp.float32), action=jnp.zeros((6, A)),
               reward=jnp.asarray(r.normal(size=6), jnp.float32), next_obs=jnp.ones((6, 3)), discount=jnp.ones(6))
  aux = _probe_aux(1.0)
  state = sac.init(jax.random.PRNGKey(0), 3, A, config, aux)
  assert state.encoder_params is None and state.aux_params["w"].shape == (3,)
  new, metrics = jax.jit(lambda s, b, k: sac.update(s, b, k, config, aux))(state, batch, jax.random.PRNGKey(1))
  err = np.asarray(batch["obs"]) @ np.full(3, 0.1) - np.asarray(batch["reward"])
  np.testing.assert_allclose(metrics["aux/loss/probe"], np.mean(err ** 2), rtol=1e-5)
  g_w = 2 * np.mean(err[:, None] * np.asarray(batch["obs"]), axis=0)
  np.testing.assert_allclose(new.aux_params["w"] - state.aux_params["w"], -1e-2 * np.sign(g_w), atol=1e-6)
  plain, _ = jax.jit(lambda s, b, k: sac.update(s, b, k, config))(sac.init(jax.random.PRNGKey(0), 3, A, config), batch,
                                                                  jax.random.PRNGKey(1))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), new.critic_params,
               plain.critic_params)   # two programs, one update: rounding only (an aux step would be ~lr)


def test_vector_encoder_is_off_by_default_and_trained_by_aux_losses_when_on():
  """`state_encoder_hidden` puts a shared MLP between vector observations and the heads; the aux losses reach it
  (RLV's adversarial term on state tasks), and the default keeps the vector itself as the feature."""
  r = np.random.default_rng(0)
  batch = dict(obs=jnp.asarray(r.normal(size=(6, 3)), jnp.float32),
               action=jnp.asarray(r.uniform(-1, 1, (6, A)), jnp.float32),
               reward=jnp.asarray(r.normal(size=6), jnp.float32),
               next_obs=jnp.asarray(r.normal(size=(6, 3)), jnp.float32), discount=jnp.ones(6, jnp.float32))
  assert sac.init(jax.random.PRNGKey(0), 3, A, _config()).encoder_params is None
  config = _config(state_encoder_hidden=(8, 5))
  moved = {}
  for weight in (0.0, 1.0):
    aux = _probe_aux(weight)
    state = sac.init(jax.random.PRNGKey(0), 3, A, config, aux)
    assert jax.tree.leaves(state.aux_params)[0].shape == (5,)       # the probe sees the encoder's 5 features
    new, metrics = sac.update(state, batch, jax.random.PRNGKey(1), config, aux)
    assert np.isfinite(float(metrics["critic_loss"]))
    moved[weight] = jax.tree.map(lambda a, b: np.asarray(a - b), new.encoder_params, state.encoder_params)
    action = sac.act(sac.policy_params(new), batch["obs"], jax.random.PRNGKey(2), True, config, A)
    assert action.shape == (6, A)
  diffs = [np.abs(a - b).max() for a, b in zip(jax.tree.leaves(moved[0.0]), jax.tree.leaves(moved[1.0]))]
  assert max(diffs) > 1e-6          # the aux term's gradient reached the vector encoder
  assert all(np.abs(d).max() > 0 for d in jax.tree.leaves(moved[0.0]))   # the critic trains it too
