"""EMA vector quantisation (van den Oord et al., 2017, App. A.1) as pure functions, as used by LAPO.

LAPO quantises the IDM's 128-d latent action with 2 codebooks x 4 latents per codebook x 16-d codes, 64 codes
per codebook, commitment cost 0.05, EMA decay 0.999, straight-through gradients (paper Sec. 3.4 / 4.1 and
Table A.4; official ``VQEmbeddingEMA`` in ``lapo/models.py``). The codebook is not trained by gradients, so its
state lives outside the Flax params in a ``VQState`` pytree that the caller threads through training.

Shapes (G codebooks, K codes per codebook, D code dim, P latents per codebook, L = G * P * D):
  embeddings (G, K, D), cluster_size (G, K), embed_sum (G, K, D);
  z (..., L) is viewed as (..., G, P, D) (codebook-major, then latent, then dim); indices (..., G, P).
The official code views the 128 features as (G, D, P) instead; this is a fixed permutation of the IDM's
(freshly initialised) output units, so it has no effect on training.
"""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

_HI = jax.lax.Precision.HIGHEST  # No TF32/bf16 passes: argmin and EMA sums stay float32-exact on GPU/TPU.


@flax.struct.dataclass
class VQState:
  """EMA codebook state: embeddings (G, K, D), cluster_size (G, K), embed_sum (G, K, D)."""

  embeddings: jax.Array
  cluster_size: jax.Array
  embed_sum: jax.Array

  @property
  def num_codebooks(self) -> int:
    return self.embeddings.shape[0]

  @property
  def num_embeddings(self) -> int:
    return self.embeddings.shape[1]

  @property
  def dim(self) -> int:
    return self.embeddings.shape[2]


def vq_init(rng: jax.Array, num_codebooks: int, num_embeddings: int, dim: int) -> VQState:
  """Embeddings ~ U(-5/K, 5/K) as in the official LAPO code, embed_sum = embeddings, cluster_size = 1.

  Deliberate deviation: the official code starts cluster_size at 0, so the first EMA update divides every code
  the first batch did not use by the Laplace floor (~1e-5) and those codes are never chosen again. On random
  latents that leaves a single live code per codebook (perplexity 1; measured, see tests/nets/test_vq.py).
  Starting at 1 makes `embeddings == embed_sum / cluster_size` hold from step 0, so unused codes stay put.
  """
  bound = 5.0 / num_embeddings
  shape = (num_codebooks, num_embeddings, dim)
  # Drawn flat: rank-3 threefry sampling compiles slowly on XLA:CPU.
  emb = jax.random.uniform(rng, (num_codebooks * num_embeddings * dim,), jnp.float32, -bound, bound)
  emb = emb.reshape(shape)
  return VQState(embeddings=emb, cluster_size=jnp.ones((num_codebooks, num_embeddings), jnp.float32),
                 embed_sum=emb)


def _split(state: VQState, z: jax.Array, num_codebooks: int | None,
           codes_per_codebook: int | None) -> tuple[jax.Array, int]:
  """(..., L) -> (..., G, P, D), checking L against the state and the optional explicit sizes."""
  g, _, d = state.embeddings.shape
  if num_codebooks is not None and num_codebooks != g:
    raise ValueError(f"num_codebooks={num_codebooks} but the state has {g} codebooks")
  if z.shape[-1] % (g * d):
    raise ValueError(f"latent size {z.shape[-1]} is not a multiple of G * D = {g * d}")
  p = z.shape[-1] // (g * d)
  if codes_per_codebook is not None and codes_per_codebook != p:
    raise ValueError(f"codes_per_codebook={codes_per_codebook} but L / (G * D) = {p}")
  return z.reshape(z.shape[:-1] + (g, p, d)), p


def vq_lookup(state: VQState, indices: jax.Array) -> jax.Array:
  """Codes for indices (..., G, P) -> (..., L) (official ``inds_to_z_q``); exact gather, no gradient to state."""
  g, _, d = state.embeddings.shape
  q = state.embeddings[jnp.arange(g)[:, None], indices]  # (..., G, P, D)
  q = jax.lax.stop_gradient(q)
  return q.reshape(indices.shape[:-2] + (g * indices.shape[-1] * d,))


def vq_quantize(state: VQState, z: jax.Array, num_codebooks: int | None = None,
                codes_per_codebook: int | None = None) -> tuple[jax.Array, dict[str, Any]]:
  """Nearest-code quantisation with the straight-through estimator.

  Args:
    state: codebook state (G, K, D).
    z: pre-quantisation latents (..., L), L = G * P * D.
    num_codebooks, codes_per_codebook: optional G and P, checked against ``state`` and L.

  Returns:
    z_q (..., L): value equal to the nearest codes, gradient identity to z (``sg(q) + z - sg(z)``, the
      official form, so the value is exactly q); no gradient reaches the codebook.
    info: ``indices`` (..., G, P) int32; ``commitment`` = mean((z - sg(q))**2), unweighted (the caller applies
      the 0.05 commitment cost); ``perplexity`` = exp(entropy of code usage over the batch and the P latents),
      averaged over codebooks (the official code logs the sum); ``perplexity_per_codebook`` (G,); ``q`` (..., L)
      the raw codes (stop-gradient).
  """
  zs, _ = _split(state, z, num_codebooks, codes_per_codebook)
  emb = jax.lax.stop_gradient(state.embeddings)
  zd = jax.lax.stop_gradient(zs)
  # Squared L2 distances (..., G, P, K) = |z|^2 - 2 z.e + |e|^2.
  dist = (jnp.sum(zd**2, -1, keepdims=True)
          - 2.0 * jnp.einsum("...gpd,gkd->...gpk", zd, emb, precision=_HI)
          + jnp.sum(emb**2, -1)[:, None, :])
  indices = jnp.argmin(dist, axis=-1).astype(jnp.int32)
  q = vq_lookup(state, indices)
  z_q = q + (z - jax.lax.stop_gradient(z))
  commitment = jnp.mean((z - q) ** 2)
  k = emb.shape[1]
  usage = jax.nn.one_hot(indices, k, dtype=jnp.float32)  # (..., G, P, K)
  probs = jnp.mean(usage.reshape((-1,) + usage.shape[-3:]), axis=(0, 2))  # (G, K)
  perplexity = jnp.exp(-jnp.sum(probs * jnp.log(probs + 1e-10), axis=-1))
  info = dict(indices=indices, commitment=commitment, perplexity=jnp.mean(perplexity),
              perplexity_per_codebook=perplexity, q=q)
  return z_q, info


def vq_ema_update(state: VQState, z: jax.Array, indices: jax.Array, decay: float | jax.Array,
                  eps: float = 1e-5, store_smoothed: bool = True) -> VQState:
  """EMA codebook update (van den Oord et al., 2017, App. A.1; Sonnet ``VectorQuantizerEMA``).

  With counts[g, k] = #{assigned to k} and sums[g, k] = sum of the z assigned to k (over the batch and P):
    cs  <- decay * cs + (1 - decay) * counts
    es  <- decay * es + (1 - decay) * sums
    n    = sum_k cs;  cs_s = (cs + eps) / (n + K * eps) * n      (Laplace smoothing)
    embeddings = es / cs_s
  ``store_smoothed=True`` keeps cs_s as the new cluster_size, as the official LAPO code does;
  False keeps the unsmoothed cs (Sonnet). z is stop-gradient'ed.

  Args:
    state: codebook state.
    z: pre-quantisation latents (..., L), the ones that produced ``indices``.
    indices: (..., G, P) from ``vq_quantize`` with the same state.
    decay: EMA decay (0.999 in LAPO).
  """
  g, k, d = state.embeddings.shape
  p = indices.shape[-1]
  zs = jax.lax.stop_gradient(z).reshape((-1, g, p, d))
  onehot = jax.nn.one_hot(indices.reshape((-1, g, p)), k, dtype=jnp.float32)  # (N, G, P, K)
  counts = jnp.sum(onehot, axis=(0, 2))  # (G, K)
  sums = jnp.einsum("ngpk,ngpd->gkd", onehot, zs, precision=_HI)
  cs = decay * state.cluster_size + (1.0 - decay) * counts
  es = decay * state.embed_sum + (1.0 - decay) * sums
  n = jnp.sum(cs, axis=-1, keepdims=True)
  cs_s = (cs + eps) / (n + k * eps) * n
  return VQState(embeddings=es / cs_s[..., None], cluster_size=cs_s if store_smoothed else cs, embed_sum=es)
