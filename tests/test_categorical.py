"""DreamerV2's categorical latents (`distributions.OneHotCategorical`, 32 variables x 32 classes) and the KL term
of either latent kind (`losses.kl_loss`): the KL against numpy, straight-through samples, log-prob, entropy and mode,
KL balancing's gradient split, and free nats per step (AIME) or on the average (DreamerV2's `free_avg`).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.distributions import Normal, OneHotCategorical, kl, kl_balanced, kl_categorical
from vidrl_jax.errors import VidrlError
from vidrl_jax.losses import elbo_losses, kl_loss

V, C = 32, 32   # DreamerV2's discrete latent


def _logits(rng, *shape):
  return jnp.asarray(rng.normal(size=(*shape, V, C)) * 2.0, jnp.float32)


def _np_log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _np_kl(q_logits, p_logits):
  """Per-variable KL of categoricals in float64: sum_c q_c (log q_c - log p_c)."""
  log_q, log_p = _np_log_softmax(q_logits), _np_log_softmax(p_logits)
  return (np.exp(log_q) * (log_q - log_p)).sum(-1)


# --- the distribution --------------------------------------------------------------------------------------------

def test_categorical_kl_by_hand_and_against_numpy():
  # One variable, two classes: q = (1/2, 1/2), p = (1/4, 3/4): KL = 1/2 log 2 + 1/2 log(2/3) = 1/2 log(4/3).
  q = OneHotCategorical(jnp.zeros((1, 2), jnp.float32))
  p = OneHotCategorical(jnp.log(jnp.asarray([[1.0, 3.0]], jnp.float32)))
  np.testing.assert_allclose(kl_categorical(q, p), [0.5 * math.log(4 / 3)], atol=1e-7, rtol=1e-6)
  rng = np.random.default_rng(0)
  q, p = OneHotCategorical(_logits(rng, 3, 4)), OneHotCategorical(_logits(rng, 3, 4))
  got = jax.jit(kl)(q, p)
  assert got.shape == (3, 4, V)                       # per variable; the latent's KL is the sum over them
  want = _np_kl(q.logits, p.logits)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(got.sum(-1), want.sum(-1), atol=1e-4, rtol=1e-5)
  np.testing.assert_allclose(kl(q, q), 0.0, atol=1e-6, rtol=0)
  assert float(got.min()) >= -1e-6 and float(got.min()) < float(got.max())


def test_straight_through_sample_is_one_hot_with_the_probabilities_gradient():
  rng = np.random.default_rng(1)
  logits = _logits(rng, 2)
  key = jax.random.key(1)
  sample = jax.jit(lambda l: OneHotCategorical(l).sample(key))(logits)
  assert sample.shape == (2, V, C)
  # The value is exactly one-hot: one 1 per variable, zeros elsewhere.
  np.testing.assert_array_equal(sample, jax.nn.one_hot(jnp.argmax(sample, -1), C))
  # Its gradient is the probabilities' gradient: d sample / d logits = d softmax / d logits, for any cotangent.
  cotangent = jnp.asarray(rng.normal(size=(2, V, C)), jnp.float32)
  _, sample_vjp = jax.vjp(lambda l: OneHotCategorical(l).sample(key), logits)
  _, probs_vjp = jax.vjp(lambda l: OneHotCategorical(l).probs, logits)
  got, want = sample_vjp(cotangent)[0], probs_vjp(cotangent)[0]
  np.testing.assert_allclose(got, want, atol=1e-7, rtol=1e-6)
  assert float(jnp.abs(want).max()) > 1e-2          # a gradient that is not zero


def test_samples_follow_the_probabilities():
  logits = jnp.log(jnp.asarray([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]], jnp.float32))
  dist = OneHotCategorical(jnp.broadcast_to(logits, (20_000, 2, 3)))
  freq = np.asarray(dist.sample(jax.random.key(2))).mean(0)
  # 20,000 draws: standard error <= sqrt(0.25 / 20000) = 0.0035, so 0.02 is > 5 standard errors.
  np.testing.assert_allclose(freq, np.exp(np.asarray(logits)), atol=0.02, rtol=0)


def test_log_prob_entropy_mode_and_flat_logits():
  rng = np.random.default_rng(3)
  flat = jnp.asarray(rng.normal(size=(5, V * C)), jnp.float32)
  dist = OneHotCategorical.from_flat(flat)
  assert dist.logits.shape == (5, V, C)
  np.testing.assert_array_equal(dist.logits[:, 1], flat[:, C:2 * C])
  log_p = _np_log_softmax(dist.logits)
  x = dist.sample(jax.random.key(3))
  index = np.asarray(jnp.argmax(x, -1))
  got = dist.log_prob(x)
  assert got.shape == (5, V)
  np.testing.assert_allclose(got, np.take_along_axis(log_p, index[..., None], -1)[..., 0], atol=1e-5, rtol=1e-5)
  ent = dist.entropy()
  assert ent.shape == (5, V)
  np.testing.assert_allclose(ent, -(np.exp(log_p) * log_p).sum(-1), atol=1e-5, rtol=1e-5)
  assert float(ent.max()) <= math.log(C) + 1e-5
  mode = dist.mode()
  np.testing.assert_array_equal(mode, jax.nn.one_hot(np.argmax(np.asarray(dist.logits), -1), C))
  with pytest.raises(VidrlError, match="classes"):
    OneHotCategorical.from_flat(flat[:, :100])


def test_kl_of_mixed_kinds_is_an_error():
  rng = np.random.default_rng(4)
  normal = Normal(jnp.zeros((2, V)), jnp.ones((2, V)))
  with pytest.raises(VidrlError, match="both Normal or both OneHotCategorical"):
    kl(normal, OneHotCategorical(_logits(rng, 2)))


# --- balancing and free nats on categorical latents ---------------------------------------------------------------

def _kl_value_and_grads(balance, free_nats=0.0, free_avg=False, seed=5, T=3, B=2, scale=1.0):
  rng = np.random.default_rng(seed)
  post, prior = _logits(rng, T, B) * scale, _logits(rng, T, B) * scale

  def loss(post, prior):
    term, _ = kl_loss(OneHotCategorical(post), OneHotCategorical(prior), balance=balance, free_nats=free_nats,
                      free_avg=free_avg)
    return jnp.sum(term)
  value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(post, prior)
  return value, grads, (post, prior)


def test_kl_balancing_splits_the_gradient_for_categorical_latents():
  b = 0.8
  value, (g_post, g_prior), _ = _kl_value_and_grads(None)
  value_b, (gb_post, gb_prior), _ = _kl_value_and_grads(b)
  np.testing.assert_allclose(value_b, value, atol=1e-4, rtol=1e-6)      # the same value (a sum of ~580 nats)
  np.testing.assert_allclose(gb_prior, b * np.asarray(g_prior), atol=1e-6, rtol=1e-5)       # the prior gets b
  np.testing.assert_allclose(gb_post, (1 - b) * np.asarray(g_post), atol=1e-6, rtol=1e-5)  # the posterior 1 - b
  assert float(jnp.abs(g_post).max()) > 1e-2 and float(jnp.abs(g_prior).max()) > 1e-2


def test_kl_loss_shapes_and_the_true_kl():
  rng = np.random.default_rng(6)
  post, prior = OneHotCategorical(_logits(rng, 4, 2)), OneHotCategorical(_logits(rng, 4, 2))
  term, value = kl_loss(post, prior, balance=0.8, free_nats=1.0)
  assert term.shape == value.shape == (4, 2)
  np.testing.assert_allclose(value, _np_kl(post.logits, prior.logits).sum(-1), atol=1e-4, rtol=1e-5)
  term, _ = kl_loss(post, prior, balance=0.8, free_nats=200.0, free_avg=True)   # above the mean KL (~103)
  assert term.shape == ()
  # The value stays the true mean KL (to the ulp of the threshold: free + (kl - free) in float32).
  np.testing.assert_allclose(term, np.mean(value), atol=1e-4, rtol=1e-6)
  # Gaussian latents through the same function: summed over Z.
  normal = Normal(jnp.zeros((4, 2, 3)), jnp.ones((4, 2, 3)))
  shifted = Normal(jnp.ones((4, 2, 3)), jnp.ones((4, 2, 3)))
  np.testing.assert_allclose(kl_loss(shifted, normal)[1], np.full((4, 2), 1.5), atol=1e-6, rtol=1e-6)


def test_free_nats_per_step_clip_only_the_steps_below():
  # Logits scaled down: per-step KLs of a few nats, some below and some above the threshold.
  _, (g_post, _), (post, prior) = _kl_value_and_grads(0.8, scale=0.15)
  per_step = _np_kl(post, prior).sum(-1)                 # (T, B)
  free = float(np.median(per_step))
  assert per_step.min() < free < per_step.max()
  value, (gf_post, gf_prior), _ = _kl_value_and_grads(0.8, free_nats=free, scale=0.15)
  np.testing.assert_allclose(value, per_step.sum(), atol=1e-4, rtol=1e-5)   # the true KL, not the clipped one
  below = per_step < free
  np.testing.assert_array_equal(np.asarray(gf_post)[below], 0.0)
  np.testing.assert_array_equal(np.asarray(gf_prior)[below], 0.0)
  np.testing.assert_allclose(np.asarray(gf_post)[~below], np.asarray(g_post)[~below], atol=1e-7, rtol=1e-6)


def _dreamerv2_kl_loss(post, prior, balance, free):
  """DreamerV2's `kl_loss(forward=False, free_avg=True)` written as in its code: the two halves clipped apart."""
  q, p = OneHotCategorical(post), OneHotCategorical(prior)
  lhs = jnp.sum(kl(q, p.stop_gradient()), -1)   # KL[q || sg(p)]
  rhs = jnp.sum(kl(q.stop_gradient(), p), -1)   # KL[sg(q) || p]
  mix = 1 - balance
  return mix * jnp.maximum(lhs.mean(), free) + (1 - mix) * jnp.maximum(rhs.mean(), free)


@pytest.mark.parametrize("free_nats", [0.0, 1.0, 1e4])
def test_free_avg_matches_dreamerv2_gradients(free_nats):
  """free_avg=True: the gradient of DreamerV2's loss, all of it or (mean KL below free nats) none."""
  _, (g_post, g_prior), (post, prior) = _kl_value_and_grads(0.8, free_nats=free_nats, free_avg=True)
  want_post, want_prior = jax.jit(jax.grad(_dreamerv2_kl_loss, argnums=(0, 1)), static_argnums=(2, 3))(
      post, prior, 0.8, free_nats)
  np.testing.assert_allclose(g_post, want_post, atol=1e-8, rtol=1e-5)
  np.testing.assert_allclose(g_prior, want_prior, atol=1e-8, rtol=1e-5)
  mean_kl = float(_np_kl(post, prior).sum(-1).mean())   # ~97 nats per step here
  assert (float(jnp.abs(g_post).max()) == 0.0) == (mean_kl < free_nats)


def test_free_avg_clips_the_average_not_the_steps():
  # The same steps as the per-step test: with free nats between the smallest step's KL and the mean, per step
  # clips that step but the average clips nothing; above the mean, the average clips everything.
  _, _, (post, prior) = _kl_value_and_grads(0.8, scale=0.15)
  per_step = _np_kl(post, prior).sum(-1)
  free = float(0.5 * (per_step.min() + per_step.mean()))
  _, (g_step, _), _ = _kl_value_and_grads(0.8, free_nats=free, scale=0.15)
  _, (g_avg, _), _ = _kl_value_and_grads(0.8, free_nats=free, free_avg=True, scale=0.15)
  _, (g_plain, _), _ = _kl_value_and_grads(0.8, free_avg=True, scale=0.15)
  smallest = np.unravel_index(np.argmin(per_step), per_step.shape)
  assert float(jnp.abs(g_step[smallest]).max()) == 0.0 and float(jnp.abs(g_avg[smallest]).max()) > 0.0
  np.testing.assert_allclose(g_avg, g_plain, atol=1e-8, rtol=1e-6)   # the mean is above free: not clipped
  _, (g_none, _), _ = _kl_value_and_grads(0.8, free_nats=float(per_step.mean()) + 0.1, free_avg=True, scale=0.15)
  np.testing.assert_array_equal(g_none, 0.0)


def test_elbo_losses_take_categorical_latents():
  rng = np.random.default_rng(7)
  T, B = 3, 2
  post, prior = OneHotCategorical(_logits(rng, T, B)), OneHotCategorical(_logits(rng, T, B))
  x = jnp.asarray(rng.normal(size=(T, B, 4)), jnp.float32)
  losses, metrics = jax.jit(elbo_losses)({"x": x}, {"x": Normal(x, jnp.ones_like(x))}, post, prior)
  want = _np_kl(post.logits, prior.logits).sum(axis=(0, 2))      # summed over variables and time, per sequence
  np.testing.assert_allclose(losses["kl"], want, atol=1e-3, rtol=1e-5)
  np.testing.assert_allclose(metrics["kl_term"], -want.mean(), atol=1e-3, rtol=1e-5)
  np.testing.assert_allclose(kl_balanced(post, prior, 0.8).sum(-1), kl(post, prior).sum(-1), atol=1e-4, rtol=1e-6)
