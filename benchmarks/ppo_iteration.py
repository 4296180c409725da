"""Speed of one PPO iteration of the IMPALA-CNN actor-critic at Procgen shapes: XLA's convolutions vs GEMMs.

  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/ppo_iteration.py                       # x1 and x4
  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/ppo_iteration.py --multipliers=1 --iterations=5
  JAX_PLATFORMS=cpu .venv/bin/python benchmarks/ppo_iteration.py --multipliers=0.25 --impls=xla --num_envs=1 \
      --num_steps=2 --minibatches=1 --iterations=1          # smallest setting (tests/test_benchmarks.py)

One iteration is one step of `rl.ppo.make_ppo_task` (LAPO's expert and stage 3 train this way): a rollout of
`--num_steps` steps in `--num_envs` envpool Procgen `--game` copies (the envs step inside the compiled program, so
the rollout IS included; Procgen's own stepping is ~0.1 ms per batched step here), GAE, then `--epochs` x
`--minibatches` clipped minibatch updates as nested `lax.scan`s. Compiled once per impl (compile time reported),
then `--iterations` + 1 iterations per impl interleaved (the first untimed); the median is reported.
Impls (`nets.conv.auto_impl`): "xla", XLA's convolutions; "matmul", GEMMs with hand-written gradients (the CPU
default). XLA:CPU runs convolution gradients far slower inside loop bodies (jax-ml/jax#12868), which is what
the minibatch `lax.scan` is.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags  # noqa: E402

from vidrl_jax.envs.procgen import make_procgen  # noqa: E402
from vidrl_jax.nets import conv  # noqa: E402
from vidrl_jax.nets.actor_critic import make_actor_critic  # noqa: E402
from vidrl_jax.nets.impala import impala_channels  # noqa: E402
from vidrl_jax.rl.ppo import make_ppo_task, procgen_ppo_config  # noqa: E402

_MULTIPLIERS = flags.DEFINE_list("multipliers", ["1", "4"], "IMPALA channel multipliers to time (0.25: 4/8/8).")
_IMPLS = flags.DEFINE_list("impls", ["xla", "matmul"], "Convolution impls, timed interleaved.")
_GAME = flags.DEFINE_string("game", "bigfish", "Procgen game.")
_NUM_ENVS = flags.DEFINE_integer("num_envs", 8, "Envs.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 16, "Rollout steps per iteration.")
_MINIBATCHES = flags.DEFINE_integer("minibatches", 2, "Minibatches per epoch.")
_EPOCHS = flags.DEFINE_integer("epochs", 1, "Epochs per iteration.")
_ITERATIONS = flags.DEFINE_integer("iterations", 3, "Timed iterations per impl (after 1 untimed).")


def _compiled(multiplier: float, impl: str):
  config = procgen_ppo_config(num_envs=_NUM_ENVS.value, num_steps=_NUM_STEPS.value,
                              num_minibatches=_MINIBATCHES.value, update_epochs=_EPOCHS.value,
                              total_env_steps=10**9)
  env = make_procgen(_GAME.value, _NUM_ENVS.value)
  apply_fn, init_fn = make_actor_critic(env.num_actions, "impala", channels=impala_channels(multiplier))
  task = make_ppo_task(env, apply_fn, lambda rng: init_fn(rng, jnp.zeros((1, 64, 64, 3), jnp.uint8)), config)
  with conv.auto_impl(impl):
    state = jax.jit(task.init)(jax.random.PRNGKey(0))
    t = time.perf_counter()
    step = jax.jit(lambda state, batch, rng: task.step(state, batch, rng), donate_argnums=0)  # fresh per impl
    compiled = step.lower(state, None, jax.random.PRNGKey(1)).compile()
    return [compiled, state, time.perf_counter() - t]


def main(argv):
  del argv
  print(f"jax {jax.__version__}; {_GAME.value}, {_NUM_ENVS.value} envs x {_NUM_STEPS.value} steps, "
        f"{_EPOCHS.value} epoch(s) x {_MINIBATCHES.value} minibatches; rollout included; impls interleaved")
  print("| IMPALA | impl | median s/iteration | iterations s | compile s | load before, after |")
  print("|---|---|---|---|---|---|")
  for multiplier in map(float, _MULTIPLIERS.value):
    runs = {impl: _compiled(multiplier, impl) for impl in _IMPLS.value}
    times = {impl: [] for impl in runs}
    load = f"{os.getloadavg()[0]:.2f}"
    for i in range(_ITERATIONS.value + 1):
      for impl, run in runs.items():
        t = time.perf_counter()
        run[1], metrics = run[0](run[1], None, jax.random.PRNGKey(i))
        jax.block_until_ready(metrics)
        if i:
          times[impl].append(time.perf_counter() - t)
    load += f", {os.getloadavg()[0]:.2f}"
    for impl, (_, _, compile_s) in runs.items():
      its = ", ".join(f"{t:.2f}" for t in times[impl])
      print(f"| x{multiplier:g} | {impl} | {statistics.median(times[impl]):.2f} | {its} | {compile_s:.1f} | {load} |",
            flush=True)


if __name__ == "__main__":
  app.run(main)
