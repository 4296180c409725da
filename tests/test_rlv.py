"""RLV's pieces: Eq. 2 labels, the inverse model's loss and labels, the signs of Eq. 3's gradients (and the
official-code switch), the interaction + observation batch, the state-based domain shift, and SAC updates with
the RLV aux on vector and image observations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.data.replay import ReplayBuffer
from vidrl_jax.errors import VidrlError
from vidrl_jax.methods.rlv import domain, model
from vidrl_jax.rl import sac

N, M, D, A = 6, 4, 2, 1   # interaction rows, observation rows, state width, action width
W = np.array([[0.5], [-1.0], [2.0], [0.25]], np.float32)   # a hand-set linear inverse model on (h, h')
BIAS = np.float32(0.1)


def _half(n, seed, keys=("action", "reward")):
  r = np.random.default_rng(seed)
  out = dict(obs=jnp.asarray(r.normal(size=(n, D)) * 0.3, jnp.float32),
             next_obs=jnp.asarray(r.normal(size=(n, D)) * 0.3, jnp.float32),
             discount=jnp.asarray([1.0] * (n - 1) + [0.0], jnp.float32),
             is_last=jnp.asarray([False, True] * (n // 2), bool))
  if "action" in keys:
    out["action"] = jnp.asarray(r.uniform(-1, 1, (n, A)), jnp.float32)
  if "reward" in keys:
    out["reward"] = jnp.asarray(r.normal(size=n), jnp.float32)
  return out


def _batch():
  b = _half(N, 0)
  b.pop("is_last")
  return {**b, "observation": _half(M, 1)}


def _linear_aux(**kw):
  config = model.rlv_config(inverse_hidden=(), discriminator_hidden=(8,), **kw)
  aux = model.make_aux(config, A)
  params = aux.init(jax.random.PRNGKey(0), jnp.zeros((1, D)), A)
  params["inverse"]["params"]["head"]["out"] = {"kernel": jnp.asarray(W), "bias": jnp.full((A,), BIAS)}
  return config, aux, params


def _identity(obs):
  return obs


def test_eq2_labels_on_hand_made_trajectories():
  np.testing.assert_array_equal(model.reward_labels(np.array([False, False, True]), 10.0, -1.0), [-1, -1, 10])
  # Two observed trajectories (3 and 2 transitions) in an action-free pool: c_large on each one's last step.
  pool = ReplayBuffer(20, {"state": ((1,), np.float32)}, rewards=False)
  pool.add_episode({"obs": {"state": np.arange(4, dtype=np.float32)[:, None]}})
  pool.add_episode({"obs": {"state": 10 + np.arange(3, dtype=np.float32)[:, None]}})
  draws = pool.gather(np.arange(pool.population()))
  labels = np.asarray(model.reward_labels(draws["is_last"], 10.0, 0.0))
  last = {float(s) for s, r in zip(draws["next_obs"]["state"][:, 0], labels) if r == 10.0}
  assert last == {3.0, 12.0} and sorted(labels.tolist()) == [0, 0, 0, 10, 10]


def test_inverse_model_loss_and_the_labels_it_writes():
  _, aux, params = _linear_aux()
  batch = _batch()
  out = aux.relabel(params, _identity, batch, jax.random.PRNGKey(0))
  half = batch["observation"]
  x = np.concatenate([np.asarray(half["obs"]), np.asarray(half["next_obs"])], axis=1)
  want = np.clip(x @ W + BIAS, -1, 1)
  np.testing.assert_allclose(out["action"][N:], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out["action"][:N], batch["action"])
  # Eq. 1 on the interaction half only, with the same linear model.
  terms, metrics = aux.loss(params, _identity, out, jax.random.PRNGKey(1))
  xi = np.concatenate([np.asarray(batch["obs"]), np.asarray(batch["next_obs"])], axis=1)
  err = xi @ W + BIAS - np.asarray(batch["action"])
  np.testing.assert_allclose(terms["inverse"], np.mean(np.sum(err ** 2, axis=1)), rtol=1e-5)
  np.testing.assert_allclose(metrics["inverse_abs_err"], np.mean(np.abs(err)), rtol=1e-5)
  # Labels beyond the action box are clipped to it.
  far = {**batch, "observation": {**half, "obs": half["obs"] + 5.0}}
  labels = aux.relabel(params, _identity, far, jax.random.PRNGKey(0))["action"][N:]
  assert float(jnp.max(jnp.abs(labels))) == 1.0


def test_batch_is_interaction_then_observation_with_the_ablation_switches():
  batch = _batch()
  half = batch["observation"]
  for actions, rewards, terminal in (("inverse", "eq2", True), ("true", "true", False), ("zeros", "zeros", True)):
    _, aux, params = _linear_aux(obs_actions=actions, obs_rewards=rewards, obs_last_is_terminal=terminal,
                                 c_large=10.0, c_small=-1.0)
    out = aux.relabel(params, _identity, batch, jax.random.PRNGKey(0))
    assert out["obs"].shape == (N + M, D) and out["action"].shape == (N + M, A) and out["reward"].shape == (N + M,)
    for key in ("obs", "next_obs"):
      np.testing.assert_array_equal(out[key], np.concatenate([batch[key], half[key]]))
    for key in ("action", "reward", "discount"):
      np.testing.assert_array_equal(out[key][:N], batch[key])
    np.testing.assert_array_equal(out[model.DOMAIN], [0] * N + [1] * M)
    np.testing.assert_array_equal(out[model.INTERACTION_ACTION], batch["action"])
    if actions == "true":
      np.testing.assert_array_equal(out["action"][N:], half["action"])
    elif actions == "zeros":
      np.testing.assert_array_equal(out["action"][N:], np.zeros((M, A)))
    want_reward = {"eq2": [-1, 10, -1, 10], "true": half["reward"], "zeros": np.zeros(M)}[rewards]
    np.testing.assert_allclose(out["reward"][N:], want_reward)
    # The pool's discount [1, 1, 1, 0]; the official code also ends the observed trajectory on its last frame.
    np.testing.assert_array_equal(out["discount"][N:], [1, 0, 1, 0] if terminal else [1, 1, 1, 0])


def test_eq3_gradient_signs_and_the_official_stop_gradient():
  r = np.random.default_rng(3)
  enc = jnp.asarray(r.normal(size=(D, D)), jnp.float32)
  obs = jnp.asarray(np.concatenate([r.normal(size=(N, D)) + 1.0, r.normal(size=(M, D)) - 1.0]), jnp.float32)
  batch = {"obs": obs, "next_obs": obs, model.INTERACTION_ACTION: jnp.zeros((N, A)),
           model.DOMAIN: jnp.asarray([0] * N + [1] * M, jnp.float32)}

  def eq3(aux, params, e):   # L_dom of Eq. 3 (the discriminator maximises it, the encoder minimises it)
    logits = model.discriminator_module(model.rlv_config(discriminator_hidden=(8,))).apply(
        params["discriminator"], obs @ e)[:, 0]
    return float(jnp.mean(jax.nn.log_sigmoid(logits[:N])) + jnp.mean(jax.nn.log_sigmoid(-logits[N:])))

  for official in (False, True):
    _, aux, params = _linear_aux(official_stop_gradient=official)

    def term(name, p, e):
      return aux.loss(p, lambda o: o @ e, batch, jax.random.PRNGKey(0))[0][name]

    # The discriminator's term equals -Eq. 3 and trains the discriminator only.
    np.testing.assert_allclose(term("discriminator", params, enc), -eq3(aux, params, enc), rtol=1e-5)
    g_disc, g_enc = jax.grad(lambda p, e: term("discriminator", p, e), argnums=(0, 1))(params, enc)
    assert float(jnp.max(jnp.abs(g_enc))) == 0.0
    stepped = jax.tree.map(lambda p, g: p - 0.1 * g, params, g_disc)
    assert eq3(aux, stepped, enc) > eq3(aux, params, enc)   # a step makes the discriminator better
    # The encoder's (label-flipped) term trains the encoder only, towards features that fool the discriminator.
    g_disc, g_enc = jax.grad(lambda p, e: term("adversarial", p, e), argnums=(0, 1))(params, enc)
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in jax.tree.leaves(g_disc))
    if official:
      assert float(jnp.max(jnp.abs(g_enc))) == 0.0
    else:
      assert float(jnp.max(jnp.abs(g_enc))) > 0.0
      assert eq3(aux, params, enc - 0.1 * g_enc) < eq3(aux, params, enc)


def test_domain_cross_entropy_by_hand():
  logits, dom = jnp.asarray([2.0, -1.0, 0.5]), jnp.asarray([0.0, 0.0, 1.0])
  sig = 1 / (1 + np.exp(-np.asarray(logits)))
  want = -(np.mean(np.log(sig[:2])) + np.log(1 - sig[2]))
  np.testing.assert_allclose(model.domain_cross_entropy(logits, dom), want, rtol=1e-5)
  flipped = -(np.mean(np.log(1 - sig[:2])) + np.log(sig[2]))
  np.testing.assert_allclose(model.domain_cross_entropy(logits, dom, flip=True), flipped, rtol=1e-5)


def test_state_shift_is_invertible_and_its_strengths_differ():
  x = np.random.default_rng(0).normal(size=(50, 6)) * 2
  maps = {name: domain.make_shift(6, seed=7, strength=s) for name, s in domain.STRENGTHS.items()}
  for shift in maps.values():
    np.testing.assert_allclose(domain.inverse(shift, domain.apply(shift, x)), x, atol=1e-5)
    xj = jnp.asarray(x, jnp.float32)
    y = jax.jit(lambda v: domain.apply(shift, v))(xj)
    assert isinstance(y, jax.Array) and y.dtype == jnp.float32
    np.testing.assert_allclose(domain.inverse(shift, y), x, atol=1e-4)
  dist = {k: np.mean(np.linalg.norm(domain.apply(s, x) - x, axis=1)) for k, s in maps.items()}
  assert 0.1 < dist["weak"] < dist["strong"]
  np.testing.assert_allclose(domain.apply(domain.make_shift(6, seed=7, strength=0.0), x), x, atol=1e-12)
  np.testing.assert_array_equal(domain.apply(maps["strong"], x), domain.apply(domain.make_shift(6, 7), x))
  assert not np.allclose(domain.apply(domain.make_shift(6, 8), x), domain.apply(maps["strong"], x))
  with pytest.raises(VidrlError, match="width 6"):
    domain.apply(maps["weak"], x[:, :3])
  with pytest.raises(VidrlError, match="strength"):
    domain.make_shift(6, 0, strength=1.5)


def _update(config, aux, state, batch):
  return jax.jit(lambda s, b, k: sac.update(s, b, k, config, aux))(state, batch, jax.random.PRNGKey(1))


def test_sac_update_with_rlv_on_vectors_and_images():
  config = sac.sac_config(actor_hidden=(16,), critic_hidden=(16,), encoder_filters=(4,), encoder_kernel=3)
  aux = model.make_aux(model.rlv_config(inverse_hidden=(8,), discriminator_hidden=(8,), discriminator_lr=1e-3), A)
  state = sac.init(jax.random.PRNGKey(0), D, A, config, aux)
  new, metrics = _update(config, aux, state, _batch())
  assert all(np.isfinite(float(v)) for v in metrics.values())
  assert {"aux/loss/inverse", "aux/loss/discriminator", "aux/loss/adversarial", "aux/inverse_abs_err",
          "aux/discriminator_accuracy"} <= set(metrics)
  for part, lr in (("inverse", 3e-4), ("discriminator", 1e-3)):   # each by its own Adam: a first step moves ~lr
    moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), state.aux_params[part], new.aux_params[part])
    np.testing.assert_allclose(max(jax.tree.leaves(moved)), lr, rtol=1e-3)
  # A tiny dict-image observation: the shared encoder (uint8 images stay uint8 through the relabel's join).
  r = np.random.default_rng(0)
  spec = {"image": ((8, 8, 3), np.uint8), "state": ((D,), np.float32)}
  obs = lambda n: {"image": jnp.asarray(r.integers(0, 256, (n, 8, 8, 3)), jnp.uint8),
                   "state": jnp.asarray(r.normal(size=(n, D)), jnp.float32)}
  batch = _batch()
  batch.update(obs=obs(N), next_obs=obs(N))
  batch["observation"].update(obs=obs(M), next_obs=obs(M))
  state = sac.init(jax.random.PRNGKey(0), spec, A, config, aux)
  new, metrics = _update(config, aux, state, batch)
  assert all(np.isfinite(float(v)) for v in metrics.values()) and int(new.step) == 1
  joined = aux.relabel(state.aux_params, lambda o: sac._encode(config, state.encoder_params, o), batch, None)
  assert joined["obs"]["image"].dtype == jnp.uint8 and joined["obs"]["image"].shape == (N + M, 8, 8, 3)
  # Without the adversarial term: no discriminator, only Eq. 1 beside SAC.
  plain = model.make_aux(model.rlv_config(inverse_hidden=(8,), adversarial=False), A)
  state = sac.init(jax.random.PRNGKey(0), D, A, config, plain)
  assert set(state.aux_params) == {"inverse"} and set(plain.weights) == {"inverse"}
  _, metrics = _update(config, plain, state, _batch())
  assert np.isfinite(float(metrics["aux/loss/inverse"])) and "aux/loss/adversarial" not in metrics


def test_bad_configs_and_batches_are_one_sentence():
  with pytest.raises(VidrlError, match="obs_actions"):
    model.make_aux(model.rlv_config(obs_actions="labels"), A)
  _, aux, params = _linear_aux(obs_actions="true")
  batch = _batch()
  with pytest.raises(VidrlError, match="'observation'"):
    aux.relabel(params, _identity, {k: v for k, v in batch.items() if k != "observation"}, None)
  batch["observation"].pop("action")
  with pytest.raises(VidrlError, match=r"lack \['action'\]"):
    aux.relabel(params, _identity, batch, None)
  with pytest.raises(VidrlError, match="1-D actions"):
    sac.init(jax.random.PRNGKey(0), D, 2, sac.sac_config(), model.make_aux(model.rlv_config(), A))


class LineEnv:
  """A point on a line: position += 0.3 * action from 0, reward -|position - 1|, 8 steps (a host env)."""
  name = "line"
  obs_spec = {"pos": ((1,), np.float32)}
  action_dim = 1
  max_steps = 8

  def reset(self, seed):
    self.pos = np.zeros(1, np.float32)
    return {"pos": self.pos.copy()}

  def step(self, action):
    self.pos = self.pos + 0.3 * np.clip(np.asarray(action, np.float32).reshape(1), -1, 1)
    return {"pos": self.pos.copy()}, -float(abs(self.pos[0] - 1.0)), False


def test_sac_task_with_an_observation_pool_end_to_end(tmp_path):
  """The interface the RLV pipeline uses: `sac_task(..., aux=make_aux(...), extra_sources={"observation": (pool,
  share)})` with an action-free pool of expert-like episodes (stored as the replay stores them, key "state")."""
  from vidrl_jax.rl import offpolicy
  from vidrl_jax.train import MetricWriter, loop_config, run
  pool = ReplayBuffer(64, {"state": ((1,), np.float32)}, rewards=False)
  for _ in range(3):
    pool.add_episode({"obs": {"state": np.linspace(0, 1, 5, dtype=np.float32)[:, None]}})
  config = sac.sac_config(actor_hidden=(16,), critic_hidden=(16,), batch_size=8, random_steps=8, train_every=4,
                          num_episodes=4, checkpoint_every_episodes=0)
  aux = model.make_aux(model.rlv_config(inverse_hidden=(8,), discriminator_hidden=(8,)), LineEnv.action_dim)
  task = offpolicy.sac_task("rlv", LineEnv(), ["pos"], config, seed=0, aux=aux,
                            extra_sources={"observation": (pool, 4)})
  writer = MetricWriter(str(tmp_path))
  state, _ = run(task, loop_config(progress=False), str(tmp_path), writer, seed=0)
  rows = [r for r in writer.rows("rlv") if "aux/loss/inverse" in r]
  assert int(state.step) > 0 and rows
  assert all(np.isfinite(r[k]) for r in rows for k in ("aux/loss/inverse", "aux/loss/discriminator",
                                                        "aux/loss/adversarial", "critic_loss"))
