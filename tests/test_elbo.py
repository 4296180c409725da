"""Gaussian distributions and the AIME ELBO losses against values computed by hand.

The reference semantics are those of the official AIME (PyTorch) code: sum over time, mean over batch; free nats
clamp the per-step KL (summed over latent dims) for the gradient only; 'dim_wise' beta-NLL weights every decoded
dimension's log-likelihood by its stop-gradient std and the KL by the mean of those stds; DreamerV2's KL balancing
b * KL(sg(q) || p) + (1 - b) * KL(q || sg(p)).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.distributions import Normal, TanhNormal, kl_balanced, kl_normal, kl_tanh_normal
from vidrl_jax.errors import VidrlError
from vidrl_jax.losses import elbo_losses, weighted_sum

# One compile per call site instead of one per primitive (eager dispatch compiles every op on XLA:CPU).
elbo = jax.jit(elbo_losses, static_argnames=("kl_balance", "nll_reweight"))
kl_normal_j = jax.jit(kl_normal)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _arr(x) -> jax.Array:
  return jnp.asarray(np.asarray(x, np.float32))


def _grad(fn, argnums=0):
  return jax.jit(jax.grad(fn, argnums=argnums))


def _kl_1d(mq: float, sq: float, mp: float, sp: float) -> float:
  """KL(N(mq, sq^2) || N(mp, sp^2)) of 1-d Gaussians, written out."""
  r = sq ** 2 / sp ** 2
  return 0.5 * (r + (mq - mp) ** 2 / sp ** 2 - 1 - math.log(r))


def _logp_1d(x: float, m: float, s: float) -> float:
  """log N(x; m, s^2), written out."""
  return -0.5 * ((x - m) / s) ** 2 - math.log(s) - HALF_LOG_2PI


# --- distributions -----------------------------------------------------------------------------------------------

def test_kl_normal_concrete_values():
  # KL(N(0.5, 1) || N(0, 1)) = 0.5 * (1 + 0.25 - 1 - 0) = 0.125.
  # KL(N(1, 0.5^2) || N(0, 2^2)) = 0.5 * (1/16 + 1/4 - 1 - log(1/16)) = 0.5 * (-0.6875 + 4 log 2).
  q = Normal(_arr([0.5, 1.0]), _arr([1.0, 0.5]))
  p = Normal(_arr([0.0, 0.0]), _arr([1.0, 2.0]))
  expected = [0.125, 0.5 * (-0.6875 + 4 * math.log(2))]
  np.testing.assert_allclose(kl_normal_j(q, p), expected, rtol=1e-6, atol=1e-6)
  assert expected[1] == pytest.approx(_kl_1d(1.0, 0.5, 0.0, 2.0), rel=1e-12, abs=1e-12)  # two float64 hand formulas


def test_kl_normal_is_per_dimension():
  rng = np.random.default_rng(1)
  q = Normal(_arr(rng.standard_normal((3, 5))), _arr(rng.uniform(0.2, 2.0, (3, 5))))
  p = Normal(_arr(rng.standard_normal((3, 5))), _arr(rng.uniform(0.2, 2.0, (3, 5))))
  kl = kl_normal_j(q, p)
  assert kl.shape == (3, 5)
  expected = [[_kl_1d(*(float(a[i, j]) for a in (q.mean, q.std, p.mean, p.std))) for j in range(5)]
              for i in range(3)]
  np.testing.assert_allclose(kl, expected, rtol=1e-5, atol=1e-6)


def test_kl_normal_of_itself_is_zero_and_kl_is_nonnegative():
  rng = np.random.default_rng(2)
  q = Normal(_arr(rng.standard_normal((64, 8))), _arr(rng.uniform(0.1, 3.0, (64, 8))))
  p = Normal(_arr(rng.standard_normal((64, 8))), _arr(rng.uniform(0.1, 3.0, (64, 8))))
  np.testing.assert_allclose(kl_normal_j(q, q), 0.0, atol=1e-6)
  kl = np.asarray(kl_normal_j(q, p))
  assert np.all(kl >= -1e-6)
  assert kl.min() < kl.max()  # Not a constant.


def test_normal_log_prob_hand_formula():
  x, m, s = [0.3, -1.2, 2.0], [0.0, 1.0, 2.0], [1.0, 0.5, 3.0]
  log_prob = jax.jit(lambda m, s, x: Normal(m, s).log_prob(x))
  np.testing.assert_allclose(log_prob(_arr(m), _arr(s), _arr(x)), [_logp_1d(*a) for a in zip(x, m, s)],
                             rtol=1e-6, atol=1e-6)
  # Standard normal at 0: -0.5 log(2 pi).
  at_zero = float(log_prob(_arr([0.0] * 3), _arr([1.0] * 3), _arr([0.0] * 3))[0])
  assert at_zero == pytest.approx(-HALF_LOG_2PI, rel=1e-6, abs=1e-6)


def test_normal_sample_is_reparameterised():
  rng = jax.random.key(3)
  mean, std = _arr([1.0, -2.0, 0.5]), _arr([0.1, 2.0, 1.0])
  eps = np.asarray(jax.random.normal(rng, (3,)))
  sample = jax.jit(lambda m, s, r: Normal(m, s).sample(r))(mean, std, rng)
  np.testing.assert_allclose(sample, np.asarray(mean) + np.asarray(std) * eps, rtol=1e-6, atol=1e-6)


# --- ELBO --------------------------------------------------------------------------------------------------------
# A tiny T=2, B=1 sequence: one latent dim, a 2-d observation 'x'.
POST_M, POST_S = [0.5, 1.0], [1.0, 0.5]
PRIOR_M, PRIOR_S = [0.0, 0.0], [1.0, 2.0]
X = [[1.0, 2.0], [0.0, -1.0]]            # (T, D)
DEC_M = [[0.5, 2.0], [0.0, 0.0]]
DEC_S = [[0.5, 2.0], [1.5, 0.25]]


def _latents(post_m=POST_M, post_s=POST_S, prior_m=PRIOR_M, prior_s=PRIOR_S):
  """(T,) lists -> Normals over (T, B=1, Z=1)."""
  as_tbz = lambda v: _arr(np.reshape(np.asarray(v), (-1, 1, 1)))
  return Normal(as_tbz(post_m), as_tbz(post_s)), Normal(as_tbz(prior_m), as_tbz(prior_s))


def _decoded(std):
  """(T, D) lists -> targets and decoded Normal over (T, B=1, D)."""
  as_tbd = lambda v: _arr(np.asarray(v)[:, None, :])
  return {"x": as_tbd(X)}, {"x": Normal(as_tbd(DEC_M), as_tbd(std))}


def _hand_kl_t() -> list[float]:
  return [_kl_1d(POST_M[t], POST_S[t], PRIOR_M[t], PRIOR_S[t]) for t in range(2)]


def _hand_logp(std) -> list[list[float]]:
  return [[_logp_1d(X[t][d], DEC_M[t][d], std[t][d]) for d in range(2)] for t in range(2)]


def test_elbo_losses_hand_values():
  ones = [[1.0, 1.0], [1.0, 1.0]]
  targets, decoded = _decoded(ones)
  post, prior = _latents()
  losses, metrics = elbo(targets, decoded, post, prior)
  assert set(losses) == {"rec/x", "kl"}
  assert losses["rec/x"].shape == (1,) and losses["kl"].shape == (1,)
  # Unit-std log-likelihoods: (x - m) = (0.5, 0), (0, -1).
  rec = 0.5 * 0.25 + 0.5 * 0.0 + 0.5 * 0.0 + 0.5 * 1.0 + 4 * HALF_LOG_2PI
  assert rec == pytest.approx(-sum(map(sum, _hand_logp(ones))), rel=1e-12, abs=1e-12)  # two float64 hand formulas
  kl = 0.125 + 0.5 * (-0.6875 + 4 * math.log(2))
  assert kl == pytest.approx(sum(_hand_kl_t()), rel=1e-12, abs=1e-12)
  np.testing.assert_allclose(losses["rec/x"], [rec], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(losses["kl"], [kl], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(metrics["elbo"], -rec - kl, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(metrics["rec_term"], -rec, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(metrics["kl_term"], -kl, rtol=1e-6, atol=1e-6)
  # mse of the decoded mean: (0.25 + 0 + 0 + 1) / 4.
  np.testing.assert_allclose(metrics["mse/x"], 1.25 / 4, rtol=1e-6, atol=1e-6)


def test_elbo_losses_sum_over_time_per_sequence():
  # B=2 sequences: each loss entry is that sequence's sum over time (no mean over batch or time inside).
  t, b, z, d = 3, 2, 4, 5
  rng = np.random.default_rng(3)
  post = Normal(_arr(rng.standard_normal((t, b, z))), _arr(rng.uniform(0.5, 1.5, (t, b, z))))
  prior = Normal(_arr(rng.standard_normal((t, b, z))), _arr(rng.uniform(0.5, 1.5, (t, b, z))))
  x = _arr(rng.standard_normal((t, b, d)))
  dec = Normal(_arr(rng.standard_normal((t, b, d))), _arr(rng.uniform(0.5, 1.5, (t, b, d))))
  losses, _ = elbo({"x": x}, {"x": dec}, post, prior)
  np.testing.assert_allclose(losses["kl"], np.asarray(kl_normal_j(post, prior)).sum(axis=(0, 2)),
                             rtol=1e-5, atol=1e-5)
  xs, m, s = (np.asarray(a, np.float64) for a in (x, dec.mean, dec.std))
  logp = -0.5 * ((xs - m) / s) ** 2 - np.log(s) - HALF_LOG_2PI
  np.testing.assert_allclose(losses["rec/x"], -logp.sum(axis=(0, 2)), rtol=1e-5, atol=1e-5)
  assert not np.allclose(losses["kl"][0], losses["kl"][1])


def _kl_loss_fn(**kwargs):
  """(posterior means (T,), prior means (T,)) -> losses['kl'][0], the other inputs fixed."""
  targets, decoded = _decoded([[1.0, 1.0], [1.0, 1.0]])

  def fn(post_m, prior_m):
    post = Normal(post_m.reshape(-1, 1, 1), _latents()[0].std)
    prior = Normal(prior_m.reshape(-1, 1, 1), _latents()[1].std)
    return elbo(targets, decoded, post, prior, **kwargs)[0]["kl"][0]
  return fn


def test_free_nats_keep_the_true_kl_value():
  kl_t = _hand_kl_t()                      # 0.125 and 1.04: one step below, one above 0.5 nats.
  assert kl_t[0] < 0.5 < kl_t[1]
  for free in (0.0, 0.5, 10.0):
    value = _kl_loss_fn(free_nats=free)(_arr(POST_M), _arr(PRIOR_M))
    np.testing.assert_allclose(value, sum(kl_t), rtol=1e-6, atol=1e-6)


def test_free_nats_gradient_is_zero_below_threshold_per_step():
  # d KL_t / d m_q = (m_q - m_p) / s_p^2: 0.5 at t=0 and 1 / 4 at t=1.
  grad_plain = _grad(_kl_loss_fn())(_arr(POST_M), _arr(PRIOR_M))
  np.testing.assert_allclose(grad_plain, [0.5, 0.25], rtol=1e-6, atol=1e-6)
  # 0.5 nats: t=0 (KL 0.125) is below and gets no gradient, t=1 (KL 1.04) keeps its gradient.
  grad = _grad(_kl_loss_fn(free_nats=0.5))(_arr(POST_M), _arr(PRIOR_M))
  np.testing.assert_allclose(grad, [0.0, 0.25], rtol=1e-6, atol=1e-6)
  # Above every step's KL: no gradient at all.
  grad = _grad(_kl_loss_fn(free_nats=10.0))(_arr(POST_M), _arr(PRIOR_M))
  np.testing.assert_allclose(grad, [0.0, 0.0], rtol=1e-6, atol=1e-6)


def test_free_nats_clamp_the_kl_summed_over_latent_dims():
  # Z=2 dims of 0.3 nats each: every dim is below 0.5 but their sum (0.6) is above, so the gradient survives.
  m = math.sqrt(0.6)                        # KL(N(m, 1) || N(0, 1)) = m^2 / 2 = 0.3.
  targets, decoded = _decoded([[1.0, 1.0], [1.0, 1.0]])

  def fn(post_m):
    post = Normal(post_m, jnp.ones((2, 1, 2)))
    prior = Normal(jnp.zeros((2, 1, 2)), jnp.ones((2, 1, 2)))
    return elbo(targets, decoded, post, prior, free_nats=0.5)[0]["kl"][0]
  post_m = jnp.full((2, 1, 2), m, jnp.float32)
  np.testing.assert_allclose(fn(post_m), 4 * 0.3, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(_grad(fn)(post_m), np.full((2, 1, 2), m), rtol=1e-5, atol=1e-6)


def test_kl_balancing_keeps_value_and_rescales_gradients():
  b = 0.8
  plain, balanced = _kl_loss_fn(), _kl_loss_fn(kl_balance=b)
  args = (_arr(POST_M), _arr(PRIOR_M))
  np.testing.assert_allclose(balanced(*args), plain(*args), rtol=1e-5, atol=1e-6)
  g_post, g_prior = _grad(plain, argnums=(0, 1))(*args)
  gb_post, gb_prior = _grad(balanced, argnums=(0, 1))(*args)
  # Hand values of the plain gradients: +-(m_q - m_p) / s_p^2.
  np.testing.assert_allclose(g_post, [0.5, 0.25], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(g_prior, [-0.5, -0.25], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(gb_prior, b * np.asarray(g_prior), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(gb_post, (1 - b) * np.asarray(g_post), rtol=1e-5, atol=1e-6)


def test_kl_balanced_std_gradients_rescale():
  b = 0.3
  qm, qs, pm, ps = _arr([0.2, -1.0]), _arr([0.7, 1.3]), _arr([0.5, 0.1]), _arr([1.1, 0.6])
  loss = lambda bal: lambda qs, ps: jnp.sum(kl_balanced(Normal(qm, qs), Normal(pm, ps), bal))
  g_qs, g_ps = _grad(loss(None), argnums=(0, 1))(qs, ps)
  gb_qs, gb_ps = _grad(loss(b), argnums=(0, 1))(qs, ps)
  np.testing.assert_allclose(gb_qs, (1 - b) * np.asarray(g_qs), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(gb_ps, b * np.asarray(g_ps), rtol=1e-5, atol=1e-6)


def test_dim_wise_hand_values():
  targets, decoded = _decoded(DEC_S)
  post, prior = _latents()
  losses, metrics = elbo(targets, decoded, post, prior, nll_reweight="dim_wise")
  logp = _hand_logp(DEC_S)
  rec = -sum(logp[t][d] * DEC_S[t][d] for t in range(2) for d in range(2))
  # KL weight per step = the mean of that step's decoded stds: (0.5 + 2) / 2 and (1.5 + 0.25) / 2.
  weights = [1.25, 0.875]
  kl = sum(k * w for k, w in zip(_hand_kl_t(), weights))
  np.testing.assert_allclose(losses["rec/x"], [rec], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(losses["kl"], [kl], rtol=1e-6, atol=1e-6)
  # The logged ELBO stays the unweighted one.
  np.testing.assert_allclose(metrics["elbo"], sum(map(sum, logp)) - sum(_hand_kl_t()), rtol=1e-6, atol=1e-6)


def test_dim_wise_kl_weight_averages_over_all_keys_dims():
  # 'x' (2 dims) and 'y' (a 1x3 image): the KL weight is the mean of all 5 stds of the step.
  post, prior = _latents()
  targets, decoded = _decoded(DEC_S)
  y_std = [[0.1, 0.2, 0.3], [4.0, 5.0, 6.0]]
  targets["y"] = jnp.zeros((2, 1, 1, 3))
  decoded["y"] = Normal(jnp.zeros((2, 1, 1, 3)), jnp.asarray(y_std, jnp.float32).reshape(2, 1, 1, 3))
  losses, _ = elbo(targets, decoded, post, prior, nll_reweight="dim_wise")
  weights = [(0.5 + 2.0 + 0.1 + 0.2 + 0.3) / 5, (1.5 + 0.25 + 4.0 + 5.0 + 6.0) / 5]
  kl = sum(k * w for k, w in zip(_hand_kl_t(), weights))
  np.testing.assert_allclose(losses["kl"], [kl], rtol=1e-6, atol=1e-6)
  rec_y = -sum(_logp_1d(0.0, 0.0, s) * s for row in y_std for s in row)
  np.testing.assert_allclose(losses["rec/y"], [rec_y], rtol=1e-6, atol=1e-6)


def test_dim_wise_weights_are_stop_gradient():
  # d/dm [-log N(x; m, s) * sg(s)] = -(x - m) / s (not -(x - m) / s^2, nor a gradient through the weight).
  targets, decoded = _decoded(DEC_S)
  post, prior = _latents()
  std = decoded["x"].std

  def rec(mean, std):
    return elbo(targets, {"x": Normal(mean, std)}, post, prior, nll_reweight="dim_wise")[0]["rec/x"][0]
  g_mean, g_std = _grad(rec, argnums=(0, 1))(decoded["x"].mean, std)
  x, m, s = (np.asarray(a) for a in (targets["x"], decoded["x"].mean, std))
  np.testing.assert_allclose(g_mean, -(x - m) / s, rtol=1e-5, atol=1e-6)
  # d/ds [(0.5 (x - m)^2 / s^2 + log s) * sg(s)] = -(x - m)^2 / s^2 + 1.
  np.testing.assert_allclose(g_std, 1 - (x - m) ** 2 / s ** 2, rtol=1e-5, atol=1e-6)


def test_dim_wise_with_unit_std_equals_none():
  targets, decoded = _decoded([[1.0, 1.0], [1.0, 1.0]])
  post, prior = _latents()
  plain, _ = elbo(targets, decoded, post, prior, free_nats=0.5)
  dim_wise, _ = elbo(targets, decoded, post, prior, free_nats=0.5, nll_reweight="dim_wise")
  assert set(plain) == set(dim_wise)
  for k in plain:
    np.testing.assert_allclose(dim_wise[k], plain[k], rtol=1e-5, atol=1e-6)


def test_elbo_losses_rejects_unknown_reweighting():
  targets, decoded = _decoded(DEC_S)
  post, prior = _latents()
  with pytest.raises(VidrlError, match="nll_reweight"):
    elbo(targets, decoded, post, prior, nll_reweight="dimwise")


# --- weighted_sum ------------------------------------------------------------------------------------------------

def test_weighted_sum_value_and_metrics():
  losses = {"rec/x": _arr([1.0, 3.0]), "kl": _arr([0.5, 1.5])}
  total, metrics = weighted_sum(losses, {"rec/x": 1.0, "kl": 0.1})
  np.testing.assert_allclose(total, 2.0 + 0.1 * 1.0, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(metrics["loss/rec/x"], 2.0, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(metrics["loss/kl"], 1.0, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(metrics["loss/total"], 2.1, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("weights", [{"rec/x": 1.0}, {"rec/x": 1.0, "kl": 1.0, "extra": 1.0},
                                     {"rec/x": 1.0, "KL": 1.0}])
def test_weighted_sum_rejects_mismatched_names(weights):
  losses = {"rec/x": _arr([1.0]), "kl": _arr([1.0])}
  with pytest.raises(VidrlError):
    weighted_sum(losses, weights)


def test_weighted_sum_checks_term_shapes():
  b3 = _arr([1.0, 2.0, 3.0])
  total, _ = weighted_sum({"a": b3, "b": _arr(2.0)}, {"a": 1.0, "b": 0.5})   # a scalar beside (B,) terms
  np.testing.assert_allclose(total, 2.0 + 1.0, rtol=1e-6, atol=1e-6)
  with pytest.raises(VidrlError, match=r"'kl' has shape \(3, 2\).*batch shape \(3,\)"):
    weighted_sum({"rec/x": b3, "kl": jnp.ones((3, 2))}, {"rec/x": 1.0, "kl": 1.0})   # forgot a reduction
  with pytest.raises(VidrlError, match=r"'rec/x' has shape \(3,\).*batch shape \(4,\)"):
    weighted_sum({"rec/x": b3}, {"rec/x": 1.0}, batch_shape=(4,))                    # the caller's batch
  weighted_sum({"rec/x": jnp.ones((2, 3)), "kl": _arr(0.0)}, {"rec/x": 1.0, "kl": 1.0}, batch_shape=(2, 3))


# --- tanh-Gaussian -----------------------------------------------------------------------------------------------

def test_tanh_normal_log_prob_change_of_variables():
  mean, std = _arr([0.3, -0.5, 1.0]), _arr([0.8, 1.2, 0.4])
  a = np.asarray([0.5, -0.9, 0.99], np.float64)
  u = np.arctanh(a)
  m, s = np.asarray(mean, np.float64), np.asarray(std, np.float64)
  expected = sum(_logp_1d(u[i], m[i], s[i]) - math.log(1 - math.tanh(u[i]) ** 2) for i in range(3))
  lp, lp_pre = jax.jit(lambda d, a, u: (d.log_prob(a), d.log_prob_pre_tanh(u)))(
      TanhNormal(mean, std), _arr(a), _arr(u))
  assert lp.shape == ()
  np.testing.assert_allclose(lp, expected, rtol=1e-4, atol=1e-5)
  # The pre-tanh form on the same u.
  np.testing.assert_allclose(lp_pre, expected, rtol=1e-5, atol=1e-5)


def test_tanh_normal_log_prob_pre_tanh_stable_for_large_u():
  # At u = 20, 1 - tanh(u)^2 underflows in float32, but log(1 - tanh^2 u) = log 4 - 2u - 2 log(1 + e^{-2u}).
  u = _arr([20.0, -20.0])
  lp = jax.jit(lambda d, u: d.log_prob_pre_tanh(u))(TanhNormal(_arr([0.0, 0.0]), _arr([1.0, 1.0])), u)
  expected = sum(_logp_1d(v, 0.0, 1.0) - (math.log(4) - 2 * abs(v)) for v in (20.0, -20.0))
  assert np.isfinite(lp)
  np.testing.assert_allclose(lp, expected, rtol=1e-5)


def test_tanh_normal_sample_and_log_prob_consistent():
  dist = TanhNormal(_arr([[0.1, -0.2], [0.4, 0.0]]), _arr([[0.5, 0.3], [0.2, 0.6]]))
  rng = jax.random.key(1)
  a, lp, a2, lp2 = jax.jit(lambda d, r: (*d.sample_and_log_prob(r), d.sample(r), d.log_prob(d.sample(r))))(
      dist, rng)
  assert a.shape == (2, 2) and lp.shape == (2,)
  assert np.all(np.abs(np.asarray(a)) < 1)
  np.testing.assert_allclose(a, a2, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(lp, lp2, rtol=1e-4, atol=1e-4)


def test_tanh_normal_mode_and_kl():
  q = TanhNormal(_arr([0.5, 1.0]), _arr([1.0, 0.5]))
  p = TanhNormal(_arr([0.0, 0.0]), _arr([1.0, 2.0]))
  mode, kl = jax.jit(lambda q, p: (q.mode(), kl_tanh_normal(q, p)))(q, p)
  np.testing.assert_allclose(mode, [math.tanh(0.5), math.tanh(1.0)], rtol=1e-6, atol=1e-6)
  assert kl.shape == ()
  np.testing.assert_allclose(kl, _kl_1d(0.5, 1.0, 0.0, 1.0) + _kl_1d(1.0, 0.5, 0.0, 2.0), rtol=1e-6, atol=1e-6)
