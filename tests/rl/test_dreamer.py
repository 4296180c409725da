"""DreamerV2's actor-critic (`rl.dreamer`) and its truncated-Gaussian actor distribution: the distribution against
scipy, the losses against a plain-Python reading of DreamerV2's equations, the slow critic's schedule, the
gradient paths (dynamics for continuous actions, REINFORCE for discrete) and the imagined reward rising."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from vidrl_jax.distributions import TruncNormal
from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.rssm import RSSM, RSSMState, features, zeros_state
from vidrl_jax.rl.dreamer import ActorCritic, Imagination, dreamer_config

B, A = 4, 2
RSSM_SMALL = RSSM(deter=6, stoch=2, classes=3, hidden=8, layers=1, latent="categorical")


def _config(lr=None, **overrides):
  c = dreamer_config(horizon=5, actor_hidden=(16,), critic_hidden=(16,), slow_target_update=3, **overrides)
  if lr:
    c.actor_optim.lr = c.critic_optim.lr = lr
  return c


def _rssm_params(seed=0):
  """Random parameters whose GRU weighs the action 5 times as much as the init would (the action's effect on the
  next state, hence on the reward below, then stands out of the sampling noise within a few dozen updates)."""
  params = RSSM_SMALL.init(jax.random.key(seed), zeros_state(RSSM_SMALL, (1,)), jnp.zeros((1, A)),
                           jnp.zeros((1, 5)), jax.random.key(1))
  kernel = params["params"]["gru"]["input"]["kernel"]          # rows: [stoch (6), action (A)]
  params["params"]["gru"]["input"]["kernel"] = kernel.at[-A:].multiply(5.0)
  return params


def _start(seed=2):
  rng = np.random.default_rng(seed)
  stoch = np.eye(3, dtype=np.float32)[rng.integers(0, 3, (B, 2))].reshape(B, 6)
  return RSSMState(jnp.asarray(rng.standard_normal((B, 6)), jnp.float32), jnp.asarray(stoch))


def _heads(states: RSSMState):
  """A reward that the actor can raise: the first deterministic unit; discounts 0.99 everywhere."""
  reward = states.deter[..., 0]
  return reward, jnp.full(reward.shape, 0.99)


def test_trunc_normal_matches_scipy():
  mean = np.array([-0.9, -0.2, 0.0, 0.5, 0.95], np.float32)
  std = np.array([0.1, 0.5, 1.0, 2.0, 0.3], np.float32)
  x = np.array([-0.95, 0.3, -0.5, 0.99, 0.9], np.float32)
  d = TruncNormal(jnp.asarray(mean), jnp.asarray(std))
  ref = stats.truncnorm((-1 - mean) / std, (1 - mean) / std, loc=mean, scale=std)
  np.testing.assert_allclose(d.log_prob(jnp.asarray(x)), ref.logpdf(x), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(d.entropy(), ref.entropy(), rtol=1e-4, atol=1e-5)
  samples = np.asarray(jax.jit(jax.vmap(d.sample))(jax.random.split(jax.random.key(0), 20000)))
  assert samples.min() > -1 and samples.max() < 1
  # Monte-Carlo mean within 5 standard errors of scipy's
  assert np.all(np.abs(samples.mean(0) - ref.mean()) < 5 * ref.std() / np.sqrt(20000)), (samples.mean(0), ref.mean())
  grad = jax.grad(lambda m: jnp.sum(TruncNormal(m, jnp.asarray(std)).sample(jax.random.key(1))))(jnp.asarray(mean))
  assert np.all(np.asarray(grad) > 0)   # reparameterised: a higher mean moves every sample up


def test_trunc_normal_sample_and_gradient_at_the_bounds():
  """The inverse-CDF sample and its gradient against scipy's quantile (value, and float64 central differences in
  mean and std), over a grid that holds the actor at its std floor with its mean at a bound and the uniform level
  at exactly 0 or 1 (jax.random.uniform draws 0 with probability 2^-23): there ndtri(Phi(a) + u Z) of the plain
  formula is -inf (NaN after the clip), which ended a cpu fine-tuning run after ~1,000 updates."""
  grid = np.array(np.meshgrid([0.9999, -0.9999, 0.5, 0.0], [0.1, 0.3, 2.0],
                              [0.0, 2.0 ** -23, 1e-3, 0.3, 0.9, 1 - 2.0 ** -23, 1.0], indexing="ij")).reshape(3, -1)
  mean, std, u = grid
  sample = lambda m, s, q: TruncNormal(m, s).from_uniform(q, clip=0.0)
  grads = jax.vmap(jax.grad(sample, argnums=(0, 1)))
  args = [jnp.asarray(v, jnp.float32) for v in (mean, std, u)]
  value, (d_mean, d_std) = jax.vmap(sample)(*args), grads(*args)
  quantile = lambda m, s: stats.truncnorm.ppf(u, (-1 - m) / s, (1 - m) / s, loc=m, scale=s)
  h = 1e-6
  np.testing.assert_allclose(value, quantile(mean, std), rtol=0, atol=1e-4)
  np.testing.assert_allclose(d_mean, (quantile(mean + h, std) - quantile(mean - h, std)) / (2 * h), rtol=1e-3,
                             atol=1e-3)
  np.testing.assert_allclose(d_std, (quantile(mean, std + h) - quantile(mean, std - h)) / (2 * h), rtol=1e-3,
                             atol=1e-3)


def test_losses_are_dreamerv2s_equations():
  ac = ActorCritic(RSSM_SMALL, A, False, _config(actor_grad="both", actor_grad_mix=0.3, actor_ent=0.01), 10)
  state = ac.init(jax.random.key(3))
  rng = np.random.default_rng(4)
  H = 5
  seq = Imagination(feat=jnp.asarray(rng.standard_normal((H + 1, B, 12)), jnp.float32),
                    action=jnp.asarray(rng.uniform(-0.9, 0.9, (H + 1, B, A)), jnp.float32),
                    reward=jnp.asarray(rng.standard_normal((H + 1, B)), jnp.float32),
                    discount=jnp.asarray(rng.uniform(0.5, 1.0, (H + 1, B)), jnp.float32))
  slow = jax.tree.map(lambda x: x + 0.1, state.critic)   # a slow critic unlike the critic
  losses, _, target = ac.losses(state.actor, state.critic, slow, seq)
  f64 = lambda x: np.asarray(x, np.float64)
  v_slow, v = f64(ac.critic.apply(slow, seq.feat)), f64(ac.critic.apply(state.critic, seq.feat))
  r, g = f64(seq.reward), f64(seq.discount)
  ret = np.zeros((H, B))
  nxt = v_slow[H]
  for t in reversed(range(H)):      # V^l_t = r_t + g_t ((1 - l) v(s_{t+1}) + l V^l_{t+1})
    nxt = r[t] + g[t] * ((1 - 0.95) * v_slow[t + 1] + 0.95 * nxt)
    ret[t] = nxt
  np.testing.assert_allclose(target, ret, rtol=1e-5, atol=1e-5)
  w = np.cumprod(np.concatenate([np.ones((1, B)), g[:-1]]), 0)
  pi = ac.actor.apply(state.actor, seq.feat[:-2])
  logp, ent = f64(jnp.sum(pi.log_prob(seq.action[1:-1]), -1)), f64(jnp.sum(pi.entropy(), -1))
  objective = 0.3 * ret[1:] + 0.7 * logp * (ret[1:] - v_slow[:-2]) + 0.01 * ent
  np.testing.assert_allclose(losses["actor"], -np.mean(w[:-2] * objective), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(losses["critic"], np.mean(w[:-1] * 0.5 * (v[:-1] - ret) ** 2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("discrete", [False, True])
def test_update_raises_the_imagined_reward_and_keeps_the_slow_critic_schedule(discrete):
  ac = ActorCritic(RSSM_SMALL, A, discrete, _config(lr=3e-3), 100)
  params, start = _rssm_params(), _start()
  update = jax.jit(lambda s, r: ac.update(s, params, start, _heads, r))
  state = ac.init(jax.random.key(5))
  rewards, slow_equal = [], []
  for i in range(100):
    new, metrics = update(state, jax.random.key(100 + i))
    copied = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new.slow_critic), jax.tree.leaves(new.critic)))
    kept = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new.slow_critic),
                                                    jax.tree.leaves(state.slow_critic)))
    slow_equal.append((copied, kept))
    rewards.append(float(metrics["imag_reward"]))
    state = new
  # copied from the updated critic on updates 0, 3, 6, ... and left alone in between
  assert all(c and not k for c, k in slow_equal[::3]) and all(k and not c for i, (c, k) in enumerate(slow_equal)
                                                              if i % 3)
  # The imagined reward rises (measured: continuous 0.09 -> 0.75, discrete -0.50 -> -0.31 over the first and last
  # 10 updates); the lambda-return is no measure here: the critic is still converging to r / (1 - gamma).
  assert np.mean(rewards[-10:]) > np.mean(rewards[:10]) + 0.1, (rewards[:10], rewards[-10:])
  assert int(state.step) == 100


def test_dynamics_gradient_reaches_the_actor_through_the_model():
  """Continuous actions, no entropy and rho = 1: the actor's only gradient is the return's through the imagined
  states (the policy's input is stopped), so it is non-zero only because the model carries it."""
  ac = ActorCritic(RSSM_SMALL, A, False, _config(actor_ent=0.0), 10)
  state, params, start = ac.init(jax.random.key(6)), _rssm_params(), _start()

  def actor_loss(actor_params, rssm_params):
    seq = ac.imagine(actor_params, rssm_params, start, _heads, jax.random.key(7))
    return ac.losses(actor_params, state.critic, state.slow_critic, seq)[0]["actor"]

  grads = jax.grad(actor_loss)(state.actor, params)
  assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads)) > 1e-4
  frozen = jax.tree.map(lambda p: p, params)   # a copy whose GRU ignores its input carries no gradient
  frozen["params"]["gru"]["input"]["kernel"] = jnp.zeros_like(params["params"]["gru"]["input"]["kernel"])
  grads = jax.grad(actor_loss)(state.actor, frozen)
  assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads)) == 0.0
  assert features(start).shape == (B, 12)


def test_bad_actor_grad_is_refused():
  with pytest.raises(VidrlError, match="use auto, dynamics"):
    ActorCritic(RSSM_SMALL, A, False, _config(actor_grad="backprop"), 10)
  with pytest.raises(VidrlError, match="reinforce"):
    ActorCritic(RSSM_SMALL, A, True, _config(actor_grad="dynamics"), 10)
