"""Speed of the World-Models conv encoder / decoder (`vidrl_jax/nets/conv.py`): impl "xla" vs "matmul".

  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/conv_ops.py                      # batch 256, width 32
  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/conv_ops.py --batch 2500 --runs 3 --nets decoder

Timed per net and impl: one jitted forward + backward, `jax.value_and_grad` of a sum-of-squares loss with respect
to the parameters AND the input (encoder: float images (N, 64, 64, 3) in [0, 1]; decoder: features (N, --feat)),
as in a world-model step (minus the optimiser). Also the forward alone (not differentiated, the "matmul" encoder
runs XLA's convolution: see conv.py). Compile time is trace + lower + compile.
The impls are timed interleaved in one process (run r of every impl before run r + 1 of any), so that load from
other processes on shared cores falls on both alike; reported: the median over `--runs` runs after `--warmup`
warm-up calls, and the ratio xla / matmul (> 1: matmul faster). XLA's cost analysis gives the FLOPs of the xla
program (the convolutions' true work), from which GFLOP/s of both impls.

On a 2-core machine shared with other jobs the times vary by 10-30 % from run to run. Each step also page-faults
all of XLA's temporary buffers afresh (4 KiB pages); GLIBC_TUNABLES=glibc.malloc.hugetlb=1 in the environment
(glibc >= 2.35) makes those transparent huge pages.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from vidrl_jax.nets.conv import IMPLS, ConvDecoder, ConvEncoder  # noqa: E402

_NETS = flags.DEFINE_list("nets", ["encoder", "decoder"], "Which nets to time: encoder, decoder.")
_IMPLS = flags.DEFINE_list("impls", ["xla", "matmul"], f"Which impls, among {', '.join(IMPLS)}.")
_BATCH = flags.DEFINE_integer("batch", 256, "Frames per call.")
_WIDTH = flags.DEFINE_integer("width", 32, "Conv width (32: paper size).")
_FEAT = flags.DEFINE_integer("feat", 640, "Decoder input features (AIME: deter 512 + stoch 128).")
_RUNS = flags.DEFINE_integer("runs", 3, "Timed calls per impl (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed calls after compilation.")
_FORWARD = flags.DEFINE_bool("forward", True, "Also time the forward pass alone.")


def _net_and_input(name: str, impl: str, rng: np.random.Generator):
  if name == "encoder":
    return (ConvEncoder(_WIDTH.value, impl=impl),
            jnp.asarray(rng.uniform(0, 1, (_BATCH.value, 64, 64, 3)).astype(np.float32)))
  return ConvDecoder(_WIDTH.value, impl=impl), jnp.asarray(rng.standard_normal((_BATCH.value, _FEAT.value),
                                                                                 np.float32))


def _compile(fn, *args):
  t = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return compiled, time.perf_counter() - t


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


def _time(fn, *args) -> float:
  t = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return (time.perf_counter() - t) * 1e3


def main(argv: list[str]) -> None:
  del argv
  print(f"jax {jax.__version__}, devices {jax.devices()}, batch {_BATCH.value}, width {_WIDTH.value}, "
        f"median of {_RUNS.value} runs after {_WARMUP.value} warm-up")
  print("| net | pass | impl | median ms | runs ms | compile s | GFLOP/s | xla / matmul |")
  print("|---|---|---|---|---|---|---|---|")
  rng = np.random.default_rng(0)
  for name in _NETS.value:
    nets, x = {}, None
    for impl in _IMPLS.value:
      nets[impl], x_impl = _net_and_input(name, impl, rng)
      x = x_impl if x is None else x  # the same input for every impl
    params = jax.jit(nets[_IMPLS.value[0]].init)(jax.random.key(0), x)  # the same params (identical trees)
    progs = {}
    for impl, net in nets.items():

      def loss(p, inp, net=net):
        return jnp.sum(jnp.square(net.apply(p, inp)))

      progs[("fwd+bwd", impl)] = _compile(jax.value_and_grad(loss, argnums=(0, 1)), params, x)
      if _FORWARD.value:
        progs[("fwd", impl)] = _compile(loss, params, x)
    passes = ["fwd+bwd"] + (["fwd"] if _FORWARD.value else [])
    flops = {p: _flops(progs[(p, "xla")][0]) if (p, "xla") in progs else float("nan") for p in passes}
    times: dict = {key: [] for key in progs}
    for key, (fn, _) in progs.items():
      for _ in range(_WARMUP.value):
        _time(fn, params, x)
    for _ in range(_RUNS.value):
      for key, (fn, _) in progs.items():
        times[key].append(_time(fn, params, x))
    for p in passes:
      med = {impl: statistics.median(times[(p, impl)]) for impl in _IMPLS.value}
      for impl in _IMPLS.value:
        ratio = (f"{med['xla'] / med['matmul']:.2f}x" if impl == "matmul" and {"xla", "matmul"} <= set(med)
                 else "")
        runs = ", ".join(f"{t:.0f}" for t in times[(p, impl)])
        print(f"| {name} | {p} | {impl} | {med[impl]:.1f} | {runs} | {progs[(p, impl)][1]:.2f} | "
              f"{flops[p] / med[impl] / 1e6:.1f} | {ratio} |", flush=True)


if __name__ == "__main__":
  app.run(main)
