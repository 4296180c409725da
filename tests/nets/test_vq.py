"""EMA vector quantiser against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.nets import VQState, vq_ema_update, vq_init, vq_lookup, vq_quantize

# Jitted once per signature: far fewer compiles than op-by-op eager dispatch (keeps the tests fast on CPU).
quantize = jax.jit(vq_quantize, static_argnames=("num_codebooks", "codes_per_codebook"))
ema_update = jax.jit(vq_ema_update, static_argnames=("store_smoothed",))


def _state(embeddings, cluster_size, embed_sum) -> VQState:
  f = lambda a: jnp.asarray(a, jnp.float32)
  return VQState(embeddings=f(embeddings), cluster_size=f(cluster_size), embed_sum=f(embed_sum))


# One codebook (G=1), K=2 codes of D=2, P=1 latent per codebook: e0 = (0, 0), e1 = (2, 2).
STATE1 = _state([[[0.0, 0.0], [2.0, 2.0]]], [[1.0, 3.0]], [[[0.0, 0.0], [6.0, 6.0]]])
Z1 = jnp.array([[0.5, 0.25], [1.5, 2.0], [2.5, 1.0]], jnp.float32)


def test_quantize_single_codebook_by_hand():
  z_q, info = quantize(STATE1, Z1, num_codebooks=1, codes_per_codebook=1)
  # Squared distances to (e0, e1):
  #   (0.5, 0.25): 0.25 + 0.0625 = 0.3125  vs 2.25 + 3.0625 = 5.3125 -> 0
  #   (1.5, 2.0):  2.25 + 4      = 6.25    vs 0.25 + 0      = 0.25   -> 1
  #   (2.5, 1.0):  6.25 + 1      = 7.25    vs 0.25 + 1      = 1.25   -> 1
  np.testing.assert_array_equal(info["indices"], [[[0]], [[1]], [[1]]])
  assert info["indices"].dtype == jnp.int32
  np.testing.assert_array_equal(z_q, [[0.0, 0.0], [2.0, 2.0], [2.0, 2.0]])  # exact: sg(q) + (z - sg(z))
  np.testing.assert_array_equal(info["q"], z_q)
  # Commitment: (0.3125 + 0.25 + 1.25) / 6 elements = 1.8125 / 6.
  np.testing.assert_allclose(info["commitment"], 1.8125 / 6, rtol=1e-6)
  # Usage (1/3, 2/3): perplexity = exp(-(1/3 ln 1/3 + 2/3 ln 2/3)) ~= 1.8899.
  ppl = math.exp(-(1 / 3 * math.log(1 / 3) + 2 / 3 * math.log(2 / 3)))
  np.testing.assert_allclose(info["perplexity"], ppl, rtol=1e-5)
  np.testing.assert_allclose(info["perplexity_per_codebook"], [ppl], rtol=1e-5)


@pytest.mark.parametrize("store_smoothed", [True, False])
def test_ema_update_single_codebook_by_hand(store_smoothed):
  _, info = quantize(STATE1, Z1)
  new = ema_update(STATE1, Z1, info["indices"], decay=0.5, eps=1e-5, store_smoothed=store_smoothed)
  # counts = (1, 2); sums: code 0 = (0.5, 0.25); code 1 = (1.5 + 2.5, 2.0 + 1.0) = (4, 3).
  # cs = 0.5 * (1, 3) + 0.5 * (1, 2) = (1.0, 2.5); n = 3.5.
  # es = 0.5 * ((0, 0), (6, 6)) + 0.5 * ((0.5, 0.25), (4, 3)) = ((0.25, 0.125), (5.0, 4.5)).
  es = np.array([[[0.25, 0.125], [5.0, 4.5]]])
  cs = np.array([[1.0, 2.5]])
  # Laplace smoothing: cs_s = (cs + 1e-5) / (3.5 + 2 * 1e-5) * 3.5.
  cs_s = (cs + 1e-5) / (3.5 + 2e-5) * 3.5
  # rtol 1e-6 (a few float32 ulps): the smoothing moves cs by 2e-6 to 4e-6 relative, which must show.
  np.testing.assert_allclose(new.embed_sum, es, rtol=1e-6)
  np.testing.assert_allclose(new.cluster_size, cs_s if store_smoothed else cs, rtol=1e-6)
  # embeddings = es / cs_s ~= ((0.25, 0.125), (2.0, 1.8)).
  np.testing.assert_allclose(new.embeddings, es / cs_s[..., None], rtol=1e-6)
  np.testing.assert_allclose(new.embeddings, [[[0.25, 0.125], [2.0, 1.8]]], rtol=1e-4)


def test_ema_update_eps_zero_exact():
  _, info = quantize(STATE1, Z1)
  new = ema_update(STATE1, Z1, info["indices"], decay=0.5, eps=0.0)
  # Without smoothing: embeddings = es / cs = ((0.25 / 1, 0.125 / 1), (5 / 2.5, 4.5 / 2.5)).
  np.testing.assert_allclose(new.embeddings, [[[0.25, 0.125], [2.0, 1.8]]], rtol=1e-6)
  np.testing.assert_allclose(new.cluster_size, [[1.0, 2.5]], rtol=1e-6)


# Two codebooks (G=2), K=2 codes of D=1, P=2 latents per codebook; L = 4, viewed as (G, P, D):
# z = (a0, a1 | b0, b1): a* go to codebook 0 = {-1, 1}, b* to codebook 1 = {0, 10}.
EMB2 = [[[-1.0], [1.0]], [[0.0], [10.0]]]
STATE2 = _state(EMB2, [[0.0, 0.0], [0.0, 0.0]], EMB2)  # The official init: cs = 0, es = embeddings.
Z2 = jnp.array([[-0.8, 0.6, 7.0, 1.0]], jnp.float32)


def test_quantize_two_codebooks_by_hand():
  z_q, info = quantize(STATE2, Z2, num_codebooks=2, codes_per_codebook=2)
  # -0.8 -> -1 (0), 0.6 -> 1 (1); 7 -> 10 (|3| < |7|, 1), 1 -> 0 (|1| < |9|, 0).
  np.testing.assert_array_equal(info["indices"], [[[0, 1], [1, 0]]])
  np.testing.assert_array_equal(z_q, [[-1.0, 1.0, 10.0, 0.0]])
  # Commitment: (0.2^2 + 0.4^2 + 3^2 + 1^2) / 4 = (0.04 + 0.16 + 9 + 1) / 4 = 2.55.
  np.testing.assert_allclose(info["commitment"], 2.55, rtol=1e-6)
  # Each codebook uses both codes once: perplexity 2 per codebook, mean 2.
  np.testing.assert_allclose(info["perplexity_per_codebook"], [2.0, 2.0], rtol=1e-5)
  np.testing.assert_allclose(info["perplexity"], 2.0, rtol=1e-5)
  np.testing.assert_array_equal(jax.jit(vq_lookup)(STATE2, info["indices"]), z_q)


def test_ema_update_two_codebooks_from_official_init():
  _, info = quantize(STATE2, Z2)
  new = ema_update(STATE2, Z2, info["indices"], decay=0.9, eps=1e-5)
  # Every code has count 1: cs = 0.9 * 0 + 0.1 * 1 = 0.1; n = 0.2 per codebook; the smoothing is symmetric:
  # cs_s = (0.1 + 1e-5) / (0.2 + 2e-5) * 0.2 = 0.1.
  np.testing.assert_allclose(new.cluster_size, [[0.1, 0.1], [0.1, 0.1]], rtol=1e-5, atol=1e-7)
  # es, codebook 0: 0.9 * (-1, 1) + 0.1 * (-0.8, 0.6) = (-0.98, 0.96);
  #     codebook 1: 0.9 * (0, 10) + 0.1 * (1.0, 7.0) = (0.1, 9.7).
  # float32's 1 - 0.9 is 0.1 * (1 + 2.4e-7): the 0.1 entry is off by that much.
  np.testing.assert_allclose(new.embed_sum, [[[-0.98], [0.96]], [[0.1], [9.7]]], rtol=5e-6, atol=1e-7)
  # embeddings = es / 0.1: the un-debiased first step scales the init up, as in the official code.
  np.testing.assert_allclose(new.embeddings, [[[-9.8], [9.6]], [[1.0], [97.0]]], rtol=1e-5)


def test_straight_through_gradient_and_no_codebook_gradient():
  w = jnp.array([[1.0, -2.0, 3.0, 0.5]])
  f = lambda zq: jnp.sum(jnp.sin(zq) * w)

  def loss(z, state):
    z_q, info = vq_quantize(state, z)
    return f(z_q) + 0.05 * info["commitment"] + jnp.sum(info["q"])

  z = Z2
  z_q, _ = quantize(STATE2, z)
  g_z, g_state = jax.jit(jax.grad(loss, argnums=(0, 1)))(z, STATE2)
  # d f / d z_q = cos(z_q) * w; commitment adds 0.05 * 2 * (z - q) / 4.
  df_dzq = jax.jit(jax.grad(f))(z_q)
  expected = df_dzq + 0.05 * 2.0 * (z - z_q) / z.size
  np.testing.assert_allclose(g_z, expected, rtol=1e-6, atol=1e-7)
  # The pure pass-through part: grad of f(z_q) w.r.t. z equals grad w.r.t. z_q.
  g_pass = jax.jit(jax.grad(lambda z: f(vq_quantize(STATE2, z)[0])))(z)
  np.testing.assert_array_equal(g_pass, df_dzq)
  for leaf in jax.tree_util.tree_leaves(g_state):
    np.testing.assert_array_equal(leaf, jnp.zeros_like(leaf))


def test_jit_batched_lapo_shapes_and_convergence():
  # LAPO: 2 codebooks x 4 latents x 16 dims = 128, 64 codes per codebook; leading dims (B, T).
  state = vq_init(jax.random.key(0), 2, 64, 16)
  assert state.embeddings.shape == (2, 64, 16) and state.cluster_size.shape == (2, 64)
  assert float(jnp.max(jnp.abs(state.embeddings))) <= 5.0 / 64
  np.testing.assert_array_equal(state.embed_sum, state.embeddings)
  z = jnp.asarray(np.random.default_rng(1).standard_normal((3, 5, 128)), jnp.float32)

  @jax.jit
  def step(state, z):
    z_q, info = vq_quantize(state, z, 2, 4)
    return z_q, info, vq_ema_update(state, z, info["indices"], 0.999)

  z_q, info, new = step(state, z)
  assert z_q.shape == (3, 5, 128) and info["indices"].shape == (3, 5, 2, 4)
  assert info["perplexity_per_codebook"].shape == (2,)
  assert jax.tree_util.tree_map(jnp.shape, new) == jax.tree_util.tree_map(jnp.shape, state)
  # With a fixed assignment, repeated EMA updates (decay 0.5) converge to the assigned mean.
  s = STATE1
  _, info1 = quantize(s, Z1)
  for _ in range(40):
    s = ema_update(s, Z1, info1["indices"], 0.5, eps=0.0)
  np.testing.assert_allclose(s.embeddings, [[[0.5, 0.25], [2.0, 1.5]]], rtol=1e-5)


def test_shape_checks():
  with pytest.raises(ValueError):
    quantize(STATE2, Z2, num_codebooks=3)
  with pytest.raises(ValueError):
    quantize(STATE2, Z2, codes_per_codebook=4)
  with pytest.raises(ValueError):
    vq_quantize(STATE2, jnp.zeros((1, 5)))


def test_init_keeps_unused_codes_alive():
  """vq_init starts cluster_size at 1; the official 0 collapses random latents onto one code per codebook."""
  rng = np.random.default_rng(0)
  zs = [jnp.asarray(rng.normal(size=(128, 128)).astype(np.float32) * 0.3) for _ in range(20)]
  update = jax.jit(lambda s, z: vq_ema_update(s, z, vq_quantize(s, z, 2, 4)[1]["indices"], 0.999))
  perplexity = {}
  for name, cs in (("ours", 1.0), ("official", 0.0)):
    s = vq_init(jax.random.key(0), 2, 64, 16)
    np.testing.assert_array_equal(s.cluster_size, 1.0)
    s = s.replace(cluster_size=jnp.full_like(s.cluster_size, cs))
    for z in zs:
      s = update(s, z)
    perplexity[name] = float(vq_quantize(s, zs[-1], 2, 4)[1]["perplexity"])
  assert perplexity["official"] < 1.5 and perplexity["ours"] > 20, perplexity
