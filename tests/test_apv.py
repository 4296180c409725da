"""APV's pieces: the video bonus against numpy, DreamerV2's RSSM cell switches, the world models' shapes and named
losses, loading pre-trained parts (naive fine-tuning's re-initialised action rows) and their errors, the open-loop
predictions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.errors import VidrlError
from vidrl_jax.methods.apv import bonus as bonus_lib
from vidrl_jax.methods.apv import model as model_lib
from vidrl_jax.nets.conv import decoder_size
from vidrl_jax.nets.rssm import RSSM, LayerNormGRUCell, action_rows, features, zeros_state

SMALL = dict(deter=16, hidden=16, stoch=3, classes=4, cnn_width=2, reward_hidden=(8,), image_size=16,
             enc_kernels=(4, 4), dec_kernels=(3, 3, 4))
B, T, A = 2, 6, 3


def _batch(seed: int) -> dict:
  rng = np.random.default_rng(seed)
  is_first = np.zeros((B, T), bool)
  is_first[:, 0] = True
  is_first[1, 3] = True        # a window spanning two episodes
  return {"obs": {"image": rng.integers(0, 256, (B, T, 16, 16, 3), dtype=np.uint8)}, "is_first": is_first,
          "action": rng.uniform(-1, 1, (B, T, A)).astype(np.float32),
          "reward": rng.standard_normal((B, T)).astype(np.float32)}


# ---- the video bonus ----------------------------------------------------------------------------------
def test_window_mean_and_fifo_queue_against_numpy():
  feat = np.random.default_rng(0).standard_normal((2, 7, 3)).astype(np.float32)
  want = np.stack([feat[:, t:t + 3].mean(1) for t in range(5)], 1)
  np.testing.assert_allclose(bonus_lib.window_mean(jnp.asarray(feat), 3), want, atol=1e-6, rtol=0)
  queue, count = jnp.zeros((5, 2)), jnp.zeros((), jnp.int32)
  rows = lambda v: jnp.full((2, 2), v, jnp.float32)
  queue, count = bonus_lib.push(queue, count, rows(1.0))
  queue, count = bonus_lib.push(queue, count, rows(2.0))
  queue, count = bonus_lib.push(queue, count, rows(3.0))   # 6 rows into 5 slots: the oldest 1.0 falls off
  np.testing.assert_array_equal(np.asarray(queue)[:, 0], [3, 3, 2, 2, 1])
  assert int(count) == 5
  with pytest.raises(VidrlError, match="bonus window"):
    bonus_lib.window_mean(jnp.asarray(feat), 8)


def test_knn_distance_is_the_mean_of_the_k_nearest_filled_entries():
  rng = np.random.default_rng(1)
  points, queue = rng.standard_normal((4, 3)), rng.standard_normal((10, 3))
  count, k = 7, 3
  d = np.linalg.norm(points[:, None] - queue[None, :count], axis=-1)
  want = np.sort(d, axis=1)[:, :k].mean(1)
  got = bonus_lib.knn_distance(jnp.asarray(points, jnp.float32), jnp.asarray(queue, jnp.float32),
                               jnp.asarray(count), k)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
  # fewer filled entries than k: the mean of those there are
  got2 = bonus_lib.knn_distance(jnp.asarray(points, jnp.float32), jnp.asarray(queue, jnp.float32), jnp.asarray(2), 3)
  np.testing.assert_allclose(got2, np.sort(d[:, :2], axis=1).mean(1), atol=1e-5, rtol=0)


def test_video_bonus_queues_first_then_normalises_by_the_running_magnitude():
  config = bonus_lib.bonus_config(window=2, k=2, queue_size=16, dim=4)
  feat = jnp.asarray(np.random.default_rng(2).standard_normal((2, 5, 6)), jnp.float32)
  state = bonus_lib.init_bonus(jax.random.key(0), 6, config)
  new, bonus, metrics = bonus_lib.video_bonus(state, feat, config)
  y = np.asarray(bonus_lib.window_mean(feat, 2) @ state.projection).reshape(8, 4)
  d = np.linalg.norm(y[:, None] - y[None], axis=-1)           # the queue holds just this batch (itself first)
  raw = np.sort(d, axis=1)[:, :2].mean(1)                      # nearest: itself (0) and one other
  magnitude = 0.99 * 1.0 + 0.01 * np.abs(raw).mean()
  np.testing.assert_allclose(bonus.reshape(-1), raw / (magnitude + 1e-8), atol=1e-5, rtol=0)
  np.testing.assert_allclose(new.magnitude, magnitude, atol=1e-6, rtol=0)
  assert bonus.shape == (2, 4) and int(new.count) == 8
  np.testing.assert_array_equal(new.projection, state.projection)   # fixed


# ---- DreamerV2's cell -----------------------------------------------------------------------------------
def test_layernorm_gru_matches_its_formula():
  cell = LayerNormGRUCell(features=4)
  rng = np.random.default_rng(3)
  h, x = jnp.asarray(rng.standard_normal((2, 4)), jnp.float32), jnp.asarray(rng.standard_normal((2, 5)), jnp.float32)
  params = cell.init(jax.random.key(1), h, x)
  w = np.asarray(params["params"]["dense"]["kernel"])
  parts = np.concatenate([x, h], -1) @ w
  parts = (parts - parts.mean(-1, keepdims=True)) / np.sqrt(parts.var(-1, keepdims=True) + 1e-3)
  r, c, u = np.split(parts, 3, -1)
  sig = lambda v: 1 / (1 + np.exp(-v))
  c = np.tanh(sig(r) * c)
  u = sig(u - 1)
  np.testing.assert_allclose(cell.apply(params, h, x), u * c + (1 - u) * np.asarray(h), atol=1e-5, rtol=0)


def test_action_padding_keeps_the_shapes_of_an_action_free_model():
  free = RSSM(deter=8, stoch=3, hidden=8, layers=1, latent="categorical", classes=4, img_in=True, gru="layernorm",
              action_pad=5)
  init = lambda a: free.init(jax.random.key(0), zeros_state(free, (1,)), jnp.zeros((1, a)), jnp.zeros((1, 6)),
                             jax.random.key(1))
  shapes = lambda p: jax.tree.map(lambda x: x.shape, p)
  assert shapes(init(0)) == shapes(init(3))
  path, rows = action_rows(free, 3)
  assert path == ("img_in", "kernel") and (rows.start, rows.stop) == (12, 17)
  with pytest.raises(VidrlError, match="action_pad"):
    init(6)


def test_decoder_kernels_must_end_at_the_image_size():
  assert decoder_size((5, 5, 6, 6)) == 64 and decoder_size((6, 5, 4)) == 32 and decoder_size((3, 3, 4)) == 16
  with pytest.raises(VidrlError, match="dec_kernels"):
    model_lib.video_model(model_lib.model_config(**{**SMALL, "dec_kernels": (5, 5, 6, 6)}))


# ---- the models and their losses ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models():
  out = {}
  for kind in model_lib.KINDS:
    m = model_lib.finetune_model(A, model_lib.model_config(**SMALL, kind=kind))
    out[kind] = (m, m.init(jax.random.key(2)))
  video = model_lib.video_model(model_lib.model_config(**SMALL))
  return out, (video, video.init(jax.random.key(3)))


def test_pretrain_and_finetune_losses_are_named_and_finite(models):
  finetunes, (video, vparams) = models
  config = model_lib.model_config(**SMALL)
  total, metrics = jax.jit(lambda p: model_lib.pretrain_loss(video, p, _batch(0), jax.random.key(4), config))(vparams)
  assert {"loss/image", "loss/kl", "loss/total"} <= set(metrics) and np.isfinite(float(total))
  for kind, beta in (("stacked", 1.0), ("single", 0.0)):
    m, params = finetunes[kind]
    bc = bonus_lib.bonus_config(beta=beta, window=3, k=2, queue_size=32)
    state = bonus_lib.init_bonus(jax.random.key(5), (m.lower or m.upper).feature_dim, bc)
    total, (new, post, metrics) = jax.jit(
        lambda p: model_lib.finetune_loss(m, p, state, _batch(1), jax.random.key(6), bc))(params)
    want = {"loss/image", "loss/kl", "loss/reward"} | ({"loss/af_kl", "bonus/raw"} if kind == "stacked" else set())
    assert want <= set(metrics), (kind, sorted(metrics))
    assert post.deter.shape == (T, B, 16) and np.isfinite(float(total))
    assert int(new.count) == (B * (T - 2) if beta else 0)


def test_the_video_bonus_needs_the_stacked_model(models):
  m, params = models[0]["single"]
  bc = bonus_lib.bonus_config(beta=1.0, window=3)
  with pytest.raises(VidrlError, match="stacked"):
    model_lib.finetune_loss(m, params, bonus_lib.init_bonus(jax.random.key(0), m.upper.feature_dim, bc), _batch(2),
                            jax.random.key(1), bc)


def test_loading_pretrained_parts(models):
  from vidrl_jax.methods.apv.agent import load_pretrained
  finetunes, (video, vparams) = models
  stacked, sparams = finetunes["stacked"]
  out = load_pretrained(stacked, sparams, vparams, ("encoder", "decoder", "af_rssm"))
  for a, b in ((out["encoder"], vparams["encoder"]), (out["af_rssm"], vparams["rssm"]),
               (out["decoders"], vparams["decoders"]), (out["rssm"], sparams["rssm"])):
    jax.tree.map(np.testing.assert_array_equal, a, b)
  single, params = finetunes["single"]
  naive = load_pretrained(single, params, vparams, ("rssm",))     # Fig. 6a: the action rows fresh, the rest loaded
  (layer, name), rows = action_rows(single.upper.rssm, A)
  got, pre, fresh = (np.asarray(p["params"][layer][name]) for p in (naive["rssm"], vparams["rssm"], params["rssm"]))
  np.testing.assert_array_equal(got[rows], fresh[rows])
  keep = np.ones(len(got), bool)
  keep[rows] = False
  np.testing.assert_array_equal(got[keep], pre[keep])
  with pytest.raises(VidrlError, match="finetune.load"):
    load_pretrained(single, params, vparams, ("af_rssm",))
  with pytest.raises(VidrlError, match="other shapes"):
    wide = model_lib.video_model(model_lib.model_config(**{**SMALL, "cnn_width": 3}))
    load_pretrained(single, params, wide.init(jax.random.key(9)), ("encoder",))


def test_open_loop_predictions(models):
  _, (video, vparams) = models
  images = _batch(3)["obs"]["image"]
  pred = np.asarray(jax.jit(lambda p, x: model_lib.open_loop(video, p, x, 2, jax.random.key(0)))(vparams, images))
  assert pred.shape == images.shape and pred.min() >= 0.0 and pred.max() <= 1.0
  # the context frames are reconstructions of their posteriors: they depend on the frames, the rest do not see them
  later = images.copy()
  later[:, 4:] = 255 - later[:, 4:]
  pred2 = np.asarray(jax.jit(lambda p, x: model_lib.open_loop(video, p, x, 2, jax.random.key(0)))(vparams, later))
  np.testing.assert_array_equal(pred, pred2)


@pytest.mark.parametrize("kind", model_lib.KINDS)
def test_open_loop_predictions_from_actions(models, kind):
  m, params = models[0][kind]
  batch, context = _batch(4), 3
  images, actions = batch["obs"]["image"], batch["action"]
  predict = jax.jit(lambda x, a: model_lib.open_loop_actions(m, params, x, a, context, jax.random.key(0)))
  pred = np.asarray(predict(images, actions))
  assert pred.shape == images.shape and np.all(np.isfinite(pred)) and pred.min() >= 0.0 and pred.max() <= 1.0
  # the context frames: the decoded posteriors of filtering them through the stack
  first = np.zeros((context, B), bool)
  first[0] = True
  up, _ = model_lib.observe_stack(m, params, {"image": jnp.swapaxes(images[:, :context], 0, 1)},
                                  jnp.swapaxes(actions[:, :context], 0, 1), first,
                                  jax.random.split(jax.random.key(0))[0])
  recon = m.upper.decode(params, features(up.states))["image"].mean - m.upper.pixel_offset
  np.testing.assert_allclose(pred[:, :context], np.clip(np.swapaxes(recon, 0, 1), 0, 1), atol=1e-5, rtol=0)
  # the open-loop frames follow the actions given, never the frames after the context
  later = images.copy()
  later[:, context:] = 255 - later[:, context:]
  np.testing.assert_array_equal(pred, np.asarray(predict(later, actions)))
  other = actions.copy()
  other[:, context:] = -other[:, context:]
  moved = np.asarray(predict(images, other))
  np.testing.assert_array_equal(pred[:, :context], moved[:, :context])
  assert np.abs(pred[:, context:] - moved[:, context:]).max() > 1e-4
  with pytest.raises(VidrlError, match="context frames"):
    model_lib.open_loop_actions(m, params, images, actions, T, jax.random.key(0))
