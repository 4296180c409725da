"""Named losses: every objective is a dict of terms, weighted by the config and logged term by term; the KL term
of a latent model (`kl_loss`: balancing and free nats, AIME's per-step and DreamerV2's averaged, for Gaussian and
categorical latents alike) and AIME's ELBO built on it."""

from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from vidrl_jax.distributions import Latent, Normal, kl_balanced
from vidrl_jax.errors import VidrlError


def weighted_sum(losses: Mapping[str, jax.Array], weights: Mapping[str, float],
                 batch_shape: tuple[int, ...] | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Total loss `sum_k w_k * mean(loss_k)` and the metrics `loss/<k>` (unweighted means) plus `loss/total`.

  The names of the losses and of the weights must be the same set, so a new term cannot be silently dropped
  and a weight cannot silently refer to nothing. Every term is a scalar (already reduced) or has the shape
  `batch_shape` (default: the shape of the first non-scalar term, in the order given), so a term that forgot a
  reduction, or reduced over the wrong axis, is not silently averaged with a different weight per example.
  Both are checked when the step is traced.
  """
  names, wnames = set(losses), set(weights)
  if names != wnames:
    raise VidrlError(f"loss terms {sorted(names)} and loss weights {sorted(wnames)} differ; "
                     f"add the missing weights to the config's loss_weights")
  shapes = {name: tuple(jnp.shape(value)) for name, value in losses.items()}
  if batch_shape is None:
    batch_shape = next((shape for shape in shapes.values() if shape), ())
  batch_shape = tuple(batch_shape)
  for name, shape in shapes.items():
    if shape and shape != batch_shape:
      raise VidrlError(f"loss term {name!r} has shape {shape} but every term must be a scalar or have the batch "
                       f"shape {batch_shape}; reduce it over its other axes before weighted_sum")
  total = jnp.zeros((), jnp.float32)
  metrics = {}
  for name in sorted(names):
    value = jnp.mean(losses[name])
    metrics[f"loss/{name}"] = value
    if weights[name] != 0:
      total = total + weights[name] * value
  metrics["loss/total"] = total
  return total, metrics


def kl_loss(posterior: Latent, prior: Latent, *, balance: float | None = None, free_nats: float = 0.0,
            free_avg: bool = False) -> tuple[jax.Array, jax.Array]:
  """The KL term of a latent sequence model with KL balancing and free nats; `posterior` and `prior` both `Normal`
  (..., Z) or both `OneHotCategorical` (..., vars, classes).

  Returns (loss, kl): `kl` (...) the true KL[q || p] summed over the latent's dimensions or variables; `loss` the
  term to minimise, whose value is the true KL and whose gradient is that of
    free_avg=False (AIME):      max(KL, free_nats) elementwise, shape (...): an element (a step of a sequence) below
                                free_nats gets no gradient;
    free_avg=True (DreamerV2):  max(mean(KL), free_nats), a scalar: the mean over all of (...) (batch and time), so
                                no gradient at all while the average KL is below free_nats.
  The KL is balanced first (`distributions.kl_balanced`, b = `balance`; None: plain). DreamerV2 clips its two
  balanced halves separately, mix * max(mean KL[q || sg(p)], free) + (1 - mix) * max(mean KL[sg(q) || p], free) with
  mix = 1 - b; both halves have the value of the KL, so that is the same gradient (the tests check it). Its logged
  `kl_loss` is the clipped value; here the value stays the true KL (the official AIME's straight-through `clamp_min`).
  (At b = 0.5 DreamerV2 clips elementwise whatever its `free_avg`; its and APV's configs use b = 0.8.)
  """
  kl = jnp.sum(kl_balanced(posterior, prior, balance), axis=-1)
  value = jnp.mean(kl) if free_avg else kl
  clamped = jnp.maximum(value, free_nats)
  return clamped + jax.lax.stop_gradient(value - clamped), kl


def elbo_losses(targets: Mapping[str, jax.Array], decoded: Mapping[str, Normal], posterior: Latent,
                prior: Latent, *, free_nats: float = 0.0, kl_balance: float | None = None,
                nll_reweight: str = "none") -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """The negative ELBO of a filtered sequence as named terms (AIME Eq. 1-3), each of shape (B,), summed over time.

  -ELBO = sum_t [ -log p(o_t | s_t) + KL(q(s_t | .) || p(s_t | .)) ]; the returned terms are `rec/<key>` (one
  per observation key) and `kl`, to be weighted by the config (the `kl` weight is the KL scale) and averaged over
  the batch by `weighted_sum`, which is the official code's "sum over time, mean over batch".

  Args:
    targets: key -> (T, B, ...) observations (images as float in [0, 1]).
    decoded: key -> Normal over the same shape.
    posterior, prior: Normal over (T, B, Z), or OneHotCategorical over (T, B, vars, classes).
    free_nats: the per-step KL (summed over Z or the variables) is not penalised below this value; its logged value
      stays the true KL (gradient only above the threshold, as the official `clamp_min` with a straight-through
      value; `kl_loss` with free_avg=False).
    kl_balance: None, or b in [0, 1] for DreamerV2's balancing (see `distributions.kl_balanced`).
    nll_reweight: 'none', or 'dim_wise' for beta-NLL (Seitzer et al. 2022, beta = 0.5): every dimension's
      log-likelihood is weighted by its stop-gradient std, and the KL by the mean of those weights (paper App. B:
      "we re-weight the KL term accordingly").

  Returns (losses, metrics): metrics hold the true (unweighted, unclamped) `elbo`, `rec_term`, `kl_term` per
  sequence and the per-key mean squared error of the decoded mean.
  """
  if nll_reweight not in ("none", "dim_wise"):
    raise VidrlError(f"unknown nll_reweight {nll_reweight!r}; use 'none' or 'dim_wise'")
  kl_for_grad, kl = kl_loss(posterior, prior, balance=kl_balance, free_nats=free_nats)   # (T, B) each

  losses, metrics = {}, {}
  rec_term = 0.0
  weight_sum, total_dims = 0.0, 0
  for key in sorted(decoded):
    dist, x = decoded[key], targets[key]
    logp = dist.log_prob(x)                                                   # (T, B, ...)
    axes = tuple(range(2, logp.ndim))
    rec_term = rec_term + jnp.sum(logp, axis=axes).sum(0)
    std = jax.lax.stop_gradient(dist.std) * jnp.ones_like(logp)
    if nll_reweight == "dim_wise":
      losses[f"rec/{key}"] = -jnp.sum(logp * std, axis=axes).sum(0)
      weight_sum = weight_sum + jnp.sum(std, axis=axes)
      total_dims += int(jnp.size(logp) // (logp.shape[0] * logp.shape[1]))
    else:
      losses[f"rec/{key}"] = -jnp.sum(logp, axis=axes).sum(0)
    metrics[f"mse/{key}"] = jnp.mean(jnp.square(dist.mean - x))
  kl_weight = weight_sum / total_dims if nll_reweight == "dim_wise" else 1.0
  losses["kl"] = jnp.sum(kl_for_grad * kl_weight, axis=0)
  kl_term = -jnp.sum(kl, axis=0)
  metrics.update(elbo=jnp.mean(rec_term + kl_term), rec_term=jnp.mean(rec_term), kl_term=jnp.mean(kl_term))
  return losses, metrics
