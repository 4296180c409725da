"""Why decoded LAPO policies do (or do not) act like the expert: measurements on one finished LAPO run.

  .venv/bin/python scripts/lapo_diagnose.py --workdir runs/lapo_cpu [--preset cpu] [--seed 0] [--set key=value]
      [--bc_steps 2000]

`--set` repeats the run's own config overrides (e.g. `--set env.name=SpaceInvaders-MinAtar --set stage2.steps=1000`).

Loads the run's expert and stage-1/2 checkpoints (nothing is trained) and prints, on up to 4,000 held-out
windows of the action-labelled set:
- the expert's mean policy entropy and how often its sampled action is its argmax (how multimodal the data is);
- the latent policy's R^2 against IDM(o_{t-1}, o_t, o_{t+1}), overall and by how sure the expert was, and the
  share of the latent's variance that the true action explains;
- a decoder trained on 2,048 labelled IDM latents (the probe): its accuracy on IDM latents, and on the latent
  policy's outputs pi(o_t) (the offline-decoded policy's action agreement with the taken action and with the
  expert's argmax);
- the offline-decoded policy's and the expert's returns, sampling and greedy;
- with `--bc_steps`, the upper bound of any decoded policy: the latent policy's network trained by behaviour
  cloning on every true action of the observation-only set, its accuracy and returns.
"""

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "configs"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import lapo as lapo_config  # noqa: E402
from vidrl_jax.data import formats  # noqa: E402
from vidrl_jax.methods.lapo import decode, models, stages  # noqa: E402
from vidrl_jax.methods.lapo.pipeline import Lapo  # noqa: E402
from vidrl_jax.rl.evaluate import discrete_act, evaluate_policy  # noqa: E402
from vidrl_jax.train import stage_rng  # noqa: E402


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--preset", default="cpu")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--set", action="append", default=[], help="config override key=value (as the run's)")
  parser.add_argument("--bc_steps", type=int, default=0, help="behaviour cloning on true actions (0: skip)")
  args = parser.parse_args()
  config = lapo_config.get_config(args.preset)
  config.unlock()
  for kv in args.set:
    key, value = kv.split("=", 1)
    node = config
    *path, last = key.split(".")
    for p in path:
      node = node[p]
    node[last] = type(node[last])(eval(value)) if not isinstance(node[last], str) else value
  config.loop.progress = False
  lapo = Lapo(config, args.workdir)
  root = config.data.dir or os.path.join(args.workdir, "data")
  k = config.model.context
  train = formats.lapo_chunks(os.path.join(root, config.data.train_split)).windows(k + 2)
  labelled = formats.lapo_chunks(os.path.join(root, config.data.labelled_split)).windows(k + 2)
  expert_apply, expert_params = lapo.expert()
  latent = lapo.latent_stages(args.seed, train, config.vq.enabled, "")
  _, held_out, _, y = lapo.labelled_split(args.seed, labelled)
  held_out, y = held_out[:4000], y[:4000]
  obs_t = labelled.obs(held_out, "image")[:, k]

  logits = decode.embed(lambda o: expert_apply(expert_params, o)[0], obs_t)
  p = jax.nn.softmax(logits)
  entropy = float(-(p * jnp.log(p + 1e-12)).sum(-1).mean())
  print(f"expert: mean entropy {entropy:.3f} nats (uniform {np.log(lapo.num_actions):.3f}); "
        f"taken action = expert argmax in {np.mean(logits.argmax(-1) == y):.3f}; "
        f"action frequencies {np.bincount(y, minlength=lapo.num_actions) / len(y)}")

  z = lapo.idm_latents(latent["idm"], labelled, held_out)
  pol = models.policy(config)
  z_pi = decode.embed(lambda o: pol.apply(latent["policy"], o), obs_t)
  print(f"latent policy R^2 = {decode.r_squared(z, z_pi):.3f}; the true action explains "
        f"{decode.label_share(z, y):.3f} of the latent's variance")
  confidence = np.asarray(p.max(-1))
  err, var = ((z - z_pi) ** 2).sum(-1), ((z - z.mean(0)) ** 2).sum(-1).mean()
  for lo, hi in [(0, .6), (.6, .9), (.9, .99), (.99, 1.01)]:
    m = (confidence >= lo) & (confidence < hi)
    if m.any():
      print(f"  expert's top action probability in [{lo}, {min(hi, 1)}): {m.mean():.2f} of frames, "
            f"R^2 {1 - err[m].mean() / var:.3f}")

  decoders, acc, _, mean, std, _ = lapo.probe(args.seed, latent["idm"], train, labelled, [config.probe.labels])
  dec = models.decoder(config, lapo.num_actions)
  d = decode.take(decoders, 0)
  pred_pi = np.asarray(dec.apply(d, (z_pi - mean) / std)).argmax(-1)
  print(f"probe accuracy on IDM latents {float(acc[0]):.3f}; decoder(pi(o_t)) = taken action "
        f"{np.mean(pred_pi == y):.3f}, = expert argmax {np.mean(pred_pi == logits.argmax(-1)):.3f}")

  apply_fn = decode.offline_policy(config, lapo.num_actions)
  params = {"policy": latent["policy"], "decoder": d, "mean": mean, "std": std}
  for name, fn, prm in [("offline decoded (probe decoder)", apply_fn, params), ("expert", expert_apply, expert_params)]:
    for greedy in (False, True):
      out = evaluate_policy(lapo.env, discrete_act(fn, greedy), prm, stage_rng(args.seed, "diag"), 64)
      print(f"{name}, {'greedy' if greedy else 'sampled'}: return {out['mean_return']:.1f}")
  if args.bc_steps:
    behaviour_cloning(config, lapo, train, labelled, held_out, y, args.bc_steps, args.seed)


def behaviour_cloning(config, lapo, train, labelled, held_out, y, steps, seed):
  """The latent policy's torso with an action head, trained by cross-entropy on every true action."""
  k = config.model.context
  m = config.model
  net = models.LatentPolicy(tuple(m.impala_channels), m.impala_blocks, m.fc, lapo.num_actions)
  params = net.init(stage_rng(seed, "bc"), train.obs(np.arange(1), "image")[:, k])
  tx = optax.adam(1e-3)
  opt_state = tx.init(params)

  @jax.jit
  def update(params, opt_state, obs, actions):
    grads = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
        net.apply(p, obs), actions).mean())(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  for step in range(steps):
    batch = train.gather(train.draw(seed, step, 128), keys=("image",), labels=("action",))
    params, opt_state = update(params, opt_state, batch["obs"]["image"][:, k], stages.true_actions(batch, k))
  logits = decode.embed(lambda o: net.apply(params, o), labelled.obs(held_out, "image")[:, k])
  print(f"behaviour cloning on every true action ({steps} steps): held-out accuracy "
        f"{np.mean(logits.argmax(-1) == y):.3f}")
  apply_fn = lambda p, o: (net.apply(p, o), jnp.zeros(o.shape[:1]))
  for greedy in (False, True):
    out = evaluate_policy(lapo.env, discrete_act(apply_fn, greedy), params, stage_rng(seed, "diag"), 64)
    print(f"behaviour cloning, {'greedy' if greedy else 'sampled'}: return {out['mean_return']:.1f}")


if __name__ == "__main__":
  main()
