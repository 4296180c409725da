"""The one inverse model: pairs and stacks, both fusions, identity encoder, parameter scopes, input checks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrl_jax.errors import VidrlError
from vidrl_jax.nets.heads import TanhGaussianPolicy
from vidrl_jax.nets.inverse import InverseModel, stack_frames
from vidrl_jax.nets.mlp import MLP

KEY = jax.random.PRNGKey(0)


def test_features_fusion_pair_equals_stack_and_identity_is_concat():
  net = InverseModel(head_net=nn.Dense(3, use_bias=False), encoder_net=nn.Dense(4))
  rng = np.random.default_rng(0)
  o, o2 = jnp.asarray(rng.normal(size=(5, 2)), jnp.float32), jnp.asarray(rng.normal(size=(5, 2)), jnp.float32)
  params = net.init(KEY, o, o2)
  assert set(params["params"]) == {"encoder", "head"}
  pair = net.apply(params, o, o2)
  # Two formulations of the same float32 values (XLA may fuse and order the dots differently): rtol and atol.
  np.testing.assert_allclose(pair, net.apply(params, jnp.stack([o, o2], axis=1)), rtol=1e-5, atol=1e-6)
  p = params["params"]
  h = lambda x: x @ p["encoder"]["kernel"] + p["encoder"]["bias"]
  np.testing.assert_allclose(pair, jnp.concatenate([h(o), h(o2)], -1) @ p["head"]["kernel"], rtol=1e-5,
                             atol=1e-6)
  # Identity encoder (RLV on shared-encoder features h, h'): the head sees [h, h'].
  rlv = InverseModel(head_net=MLP((64, 64, 64), out=2))
  q = rlv.init(KEY, o, o2)
  assert set(q["params"]) == {"head"} and q["params"]["head"]["dense0"]["kernel"].shape == (4, 64)


def test_channels_fusion_is_one_encoding_of_the_stacked_frames():
  frames = jnp.asarray(np.random.default_rng(1).integers(0, 256, (2, 3, 4, 4, 2)), jnp.uint8)
  stacked = stack_frames(frames)
  np.testing.assert_array_equal(stacked[..., 2:4], frames[:, 1])            # frame 1 on channels 2..3
  enc = nn.Conv(5, (3, 3))
  net = InverseModel(head_net=nn.Dense(2), encoder_net=enc, fuse="channels", scopes=("torso", "head"))
  params = net.init(KEY, frames)
  assert set(params["params"]) == {"torso", "head"}
  want = nn.Dense(2).apply({"params": params["params"]["head"]},
                           enc.apply({"params": params["params"]["torso"]}, stacked.astype(jnp.float32) / 255))
  np.testing.assert_allclose(net.apply(params, frames), want, rtol=1e-5, atol=1e-6)
  two = net.init(KEY, frames[:, :2])                                          # a pair: two frames stacked
  np.testing.assert_allclose(net.apply(two, frames[:, 0], frames[:, 1]), net.apply(two, frames[:, :2]), rtol=1e-5,
                             atol=1e-6)


def test_top_level_head_scope_and_checks():
  head = TanhGaussianPolicy(2, (8,))
  net = InverseModel(head_net=head, scopes=("encoder", None))
  s, e = jnp.ones((3, 4)), jnp.zeros((3, 1))
  params = net.init(KEY, s, e)
  jax.tree.map(np.testing.assert_array_equal, params, head.init(KEY, jnp.ones((3, 5))))   # same tree, same draws
  dist = net.apply(params, s, e)
  np.testing.assert_allclose(dist.mean, head.apply(params, jnp.concatenate([s, e], -1)).mean, rtol=1e-5,
                             atol=1e-6)
  stacked = InverseModel(head_net=nn.Dense(1), frames=3)
  with pytest.raises(VidrlError, match="3 frames per sample"):
    stacked.init(KEY, {"x": jnp.ones((2, 2, 4))})
  with pytest.raises(VidrlError, match="fuse"):
    InverseModel(head_net=nn.Dense(1), fuse="time").init(KEY, s, s)
