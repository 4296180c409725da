"""The official DreamerV3 JAX train step (danijar/dreamerv3), configured to APV's sizes: the reference column of
`benchmarks/apv_steps.py`.

Runs in DreamerV3's own environment, not this project's (it pins jax 0.4.33 and numpy<2):

  bash scripts/setup_dreamerv3.sh /path/to/dreamerv3     # a checkout of github.com/danijar/dreamerv3 (e3f0224)
  .venv-dreamerv3/bin/python benchmarks/_dreamerv3.py --src=/path/to/dreamerv3 --deter=128 ...

`apv_steps.py --dreamerv3=/path/to/dreamerv3` calls it between its own timings. Prints one JSON line: the median ms
of `--calls` timed `Agent.train` calls after one warm-up (world model, imagination and actor-critic: DreamerV3 has
one train step), compile s, and the GFLOP of XLA's cost analysis of that step.

The sizes map onto DreamerV3's options: deter/hidden/stoch/classes of the RSSM with one GRU block (DreamerV2's
dense GRU; DreamerV3's default is 8 blocks), the CNN's first depth and per-layer multipliers at stride 2 (our
encoder's layer count and widths), `units`/`layers` of every MLP head, batch x length, imagination horizon,
float32 (DreamerV3's default compute dtype is bfloat16, which this CPU does not speed up), a continuous action.
DreamerV3's own losses stay (symlog two-hot reward and value heads, percentile return normalisation, the value
loss on replayed states: switching that off fails DreamerV3's loss-scale check); replay context is off, as
DreamerV2 and APV have none.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--src", required=True, help="a checkout of github.com/danijar/dreamerv3")
  for name, default in (("deter", 128), ("hidden", 128), ("stoch", 16), ("classes", 16), ("depth", 8),
                        ("units", 128), ("layers", 2), ("batch", 8), ("length", 32), ("image", 32),
                        ("horizon", 15), ("actions", 4), ("calls", 5), ("kernel", 4)):
    p.add_argument(f"--{name}", type=int, default=default)
  p.add_argument("--mults", default="1,2,4", help="CNN widths as multiples of --depth, one per stride-2 layer")
  args = p.parse_args()
  if not os.path.isfile(os.path.join(args.src, "dreamerv3", "agent.py")):
    sys.exit(f"error: {args.src} is not a DreamerV3 checkout (no dreamerv3/agent.py); pass --src=<checkout>")
  sys.path[:0] = [args.src, os.path.join(args.src, "dreamerv3")]

  import elements  # noqa: PLC0415  (DreamerV3's environment only)
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  import ruamel.yaml as yaml  # noqa: PLC0415
  from dreamerv3.agent import Agent  # noqa: PLC0415

  configs = yaml.YAML(typ="safe").load(open(os.path.join(args.src, "dreamerv3", "configs.yaml")))
  config = elements.Config(configs["defaults"])
  mults = [int(m) for m in args.mults.split(",")]
  head = dict(units=args.units, layers=args.layers)
  config = config.update({
      "agent.dyn.rssm": dict(deter=args.deter, hidden=args.hidden, stoch=args.stoch, classes=args.classes,
                             blocks=1),
      "agent.enc.simple": dict(depth=args.depth, mults=mults, units=args.units, kernel=args.kernel, strided=True),
      "agent.dec.simple": dict(depth=args.depth, mults=mults, units=args.units, kernel=args.kernel, strided=True),
      "agent.rewhead": head, "agent.conhead": head, "agent.policy": head, "agent.value": head,
      "agent.imag_length": args.horizon,
      "jax.platform": "cpu", "jax.compute_dtype": "float32", "jax.prealloc": False,
      "batch_size": args.batch, "batch_length": args.length, "replay_context": 0,
      "logdir": os.path.join("/tmp", f"dreamerv3_reference_{os.getpid()}"),
  })
  obs_space = {"image": elements.Space(np.uint8, (args.image, args.image, 3)),
               "reward": elements.Space(np.float32), "is_first": elements.Space(bool),
               "is_last": elements.Space(bool), "is_terminal": elements.Space(bool)}
  act_space = {"action": elements.Space(np.float32, (args.actions,), -1.0, 1.0)}
  t0 = time.perf_counter()
  agent = Agent(obs_space, act_space, elements.Config(
      **config.agent, logdir=config.logdir, seed=0, jax=config.jax, batch_size=config.batch_size,
      batch_length=config.batch_length, replay_context=0, report_length=config.report_length, replica=0,
      replicas=1))
  compile_s = time.perf_counter() - t0   # parameter init + the precompiled train and report steps
  cost = agent._train.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost

  rng = np.random.default_rng(0)
  B, T = args.batch, args.length
  is_first = np.zeros((B, T), bool)
  is_first[:, 0] = True
  data = {"image": rng.integers(0, 256, (B, T, args.image, args.image, 3), dtype=np.uint8),
          "reward": rng.standard_normal((B, T)).astype(np.float32), "is_first": is_first,
          "is_last": np.zeros((B, T), bool), "is_terminal": np.zeros((B, T), bool),
          "action": rng.uniform(-1, 1, (B, T, args.actions)).astype(np.float32),
          "consec": np.zeros((B, T), np.int32), "stepid": np.zeros((B, T, 20), np.uint8)}
  stream = iter(agent.stream(iter(lambda: dict(data), None)))
  carry, times = agent.init_train(B), []
  for i in range(args.calls + 1):
    batch = next(stream)
    t = time.perf_counter()
    carry, _, _ = agent.train(carry, batch)
    jax.block_until_ready(agent.params)
    if i:
      times.append(time.perf_counter() - t)
  print(json.dumps(dict(case="dreamerv3_train", median_ms=1000 * float(np.median(times)), compile_s=compile_s,
                        gflop=float(cost.get("flops", float("nan"))) / 1e9, jax=jax.__version__,
                        sizes={k: v for k, v in vars(args).items() if k != "src"})), flush=True)


if __name__ == "__main__":
  main()
