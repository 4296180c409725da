"""LAPO end to end (paper Fig. 2 and §4): expert -> observation-only data -> stage 1 -> stage 2 -> decoding.

`train_and_evaluate(config, workdir)` runs every stage in order. Each stage resumes from its checkpoints or
reuses its cached result file, so rerunning with the same workdir picks up where an interrupted run stopped.
The expert and its dataset are shared by all seeds; stages 1-3, the baselines and the ablations run per seed.
"""

from __future__ import annotations

import dataclasses
import os
from functools import partial

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vidrl_jax import io
from vidrl_jax.data import collect as collect_lib
from vidrl_jax.data import formats, ownership
from vidrl_jax.data.sequence import Windows
from vidrl_jax.envs import make_env, rollout
from vidrl_jax.errors import VidrlError
from vidrl_jax.methods.lapo import decode, models, report, stages
from vidrl_jax.nets.impala import impala_channels
from vidrl_jax.nets.actor_critic import make_actor_critic
from vidrl_jax.rl import ppo
from vidrl_jax.rl.evaluate import discrete_act, evaluate_policy
from vidrl_jax.train import MetricWriter, run, stage_rng, write_results


class Lapo:
  """Holds what every stage shares: config, workdir, writer, environments, datasets."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, workdir
    self.writer = MetricWriter(workdir)
    self.env = make_env(config.env)
    self.num_actions = self.env.num_actions
    self.k = config.model.context

  def obs_example(self) -> np.ndarray:
    return np.zeros((1,) + tuple(self.env.obs_shape), self.env.obs_dtype)

  def path(self, *parts: str) -> str:
    return os.path.join(self.workdir, *parts)

  # ---- stage 0: expert and data -------------------------------------------------------------------------
  def ppo_run(self, name: str, apply_fn, init_params, ppo_config, seed: int, trainable=None, aux_loss=None):
    task = ppo.make_ppo_task(self.env, apply_fn, init_params, ppo_config, name=name, trainable=trainable,
                             aux_loss=aux_loss)
    state, _ = run(task, self.config.loop, self.workdir, self.writer, seed)
    return state.train_state.params

  def evaluate(self, apply_fn, params, seed: int, name: str) -> float:
    rng = stage_rng(seed, f"eval/{name}")
    out = evaluate_policy(self.env, discrete_act(apply_fn), params, rng, self.config.eval_episodes)
    return float(out["mean_return"])

  def actor_critic(self, which: str):
    """PPO networks: the expert's (`expert_net`) or one with LAPO's policy torso."""
    c = self.config
    if which == "expert" and c.expert_net.encoder == "mlp":
      return make_actor_critic(self.num_actions, encoder="mlp", hidden=tuple(c.expert_net.hidden))
    if which == "expert":
      return make_actor_critic(self.num_actions, encoder="impala", features=c.expert_net.fc,
                               channels=impala_channels(c.expert_net.impala_multiplier))
    return make_actor_critic(self.num_actions, encoder="impala", channels=tuple(c.model.impala_channels),
                             num_blocks=c.model.impala_blocks, features=c.model.fc)

  def expert(self):
    c = self.config
    apply_fn, init_fn = self.actor_critic("expert")
    params_init = init_fn(stage_rng(c.seed, "expert/init"), self.obs_example())
    params = self.ppo_run("expert", apply_fn, params_init, c.expert, c.seed)
    return apply_fn, params

  def references(self, expert_apply, expert_params) -> dict:
    def compute():
      uniform = lambda p, obs: (jnp.zeros(obs.shape[:1] + (self.num_actions,)), jnp.zeros(obs.shape[:1]))
      return {"expert_return": self.evaluate(expert_apply, expert_params, self.config.seed, "expert"),
              "random_return": self.evaluate(uniform, None, self.config.seed, "random"),
              "episodes": self.config.eval_episodes}
    return io.cached_json(self.path("references.json"), compute)

  def datasets(self, expert_apply, expert_params) -> tuple[Windows, Windows, dict]:
    """Windows of k+2 frames of the observation-only training set and of a disjoint action-labelled set.

    `data.dir` ('' = <workdir>/data) holds the splits `data.train_split` and `data.labelled_split` as LAPO
    chunks. A directory the project created is filled by rolling out the expert (or a uniform-random policy with
    `data.policy='random'`); any other directory (e.g. the official chunks, labelled split 'test') is only read.
    """
    c = self.config
    root = c.data.dir or self.path("data")
    splits = {"train": c.data.train_split, "labelled": c.data.labelled_split}
    if ownership.state(root) == "foreign":
      for split in splits.values():
        if not io.isdir(os.path.join(root, split)):
          raise VidrlError(f"the dataset directory {root} has no split {split!r} and was not created by the "
                           f"project, so nothing is collected into it; name its splits with "
                           f"--config.data.train_split/labelled_split or point data.dir elsewhere")
      info = {name: ownership.read_complete(os.path.join(root, split)) or {"source": os.path.join(root, split)}
              for name, split in splits.items()}         # older versions of the project left their summary
    else:
      ownership.claim(root, {"format": "lapo_splits"}, restart=False)
      info = self.collect(root, splits, expert_apply, expert_params)
    data = {name: formats.lapo_chunks(os.path.join(root, split), c.data.done or None, self.env.obs_shape,
                                      c.data.cache_dir or None) for name, split in splits.items()}
    for name, d in data.items():
      info[name].setdefault("frames", d.num_steps)
    return data["train"].windows(self.k + 2), data["labelled"].windows(self.k + 2), info

  def collect(self, root: str, splits: dict, expert_apply, expert_params) -> dict:
    """Rolls the data policy out into the project's own split directories (skipped where already complete)."""
    c = self.config
    env = make_env(ml_collections.ConfigDict({**c.env.to_dict(), "num_envs": c.data.num_envs}))

    def policy(params, obs, rng):
      if c.data.policy == "random":
        return jax.random.randint(rng, obs.shape[:1], 0, self.num_actions)
      logits, _ = expert_apply(params, obs)
      return jax.random.categorical(rng, logits)

    def chunks(rng, steps_per_env):
      rng, r_reset = jax.random.split(rng)
      env_state, obs = env.reset(r_reset)
      run_chunk = jax.jit(partial(rollout, env, policy, num_steps=c.data.shard_len))
      for _ in range(-(-steps_per_env // c.data.shard_len)):
        rng, r = jax.random.split(rng)
        env_state, obs, traj = run_chunk(expert_params, env_state, obs, r)
        yield jax.device_get(traj)

    meta = {"env": c.env.name, "policy": "ppo expert" if c.data.policy == "expert" else "uniform random"}
    steps = {"train": c.data.steps_per_env, "labelled": c.data.labelled_steps_per_env}
    return {name: collect_lib.collect(partial(chunks, stage_rng(c.seed, f"data/{name}"), steps[name]),
                                      os.path.join(root, split), meta)
            for name, split in splits.items()}

  # ---- stages 1-3 for one seed -----------------------------------------------------------------------------
  def run_seed(self, seed: int, train: Windows, labelled: Windows, refs: dict) -> tuple[dict, dict]:
    """This seed's results, and its latent models by variant tag ('' and, with the ablation, '_novq'): dicts
    with the stage-1 'idm', 'fdm', 'vq' and 'use_vq' (and the stage-2 'policy'), for the report's plots."""
    c = self.config
    out = {"seed": seed}
    if c.until == "probe":      # stage-1 latent quality only (e.g. the reduced Procgen run)
      s1 = self.stage1(seed, train, use_vq=c.vq.enabled, tag="", labelled=labelled)
      lapo = {"idm": s1.train.params["idm"], "fdm": s1.train.params["fdm"], "vq": s1.vq, "use_vq": c.vq.enabled}
      out.update(self.probe_and_offline(seed, train, labelled, lapo, refs, tag="", offline=False))
      out["oracle_accuracy"], out["oracle_balanced_accuracy"] = self.oracle(seed, train, labelled)
      out["random_idm_accuracy"], out["random_idm_balanced_accuracy"] = self.random_idm(seed, train, labelled)
      return out, {"": lapo}
    latents = {}
    lapo = latents[""] = self.latent_stages(seed, train, use_vq=c.vq.enabled, tag="", labelled=labelled)
    out.update(self.probe_and_offline(seed, train, labelled, lapo, refs, tag=""))
    out.update(self.online(seed, train, lapo, refs, sl=True, tag="online"))
    out.update(self.scratch(seed, refs))
    out["oracle_accuracy"], out["oracle_balanced_accuracy"] = self.oracle(seed, train, labelled)
    out["random_idm_accuracy"], out["random_idm_balanced_accuracy"] = self.random_idm(seed, train, labelled)
    ablate = seed < c.seed + c.ablations.seeds
    if c.ablations.rl_no_sl and ablate:
      out.update(self.online(seed, train, lapo, refs, sl=False, tag="online_rl_no_sl"))
    if c.ablations.no_vq and ablate:
      novq = latents["_novq"] = self.latent_stages(seed, train, use_vq=False, tag="_novq", labelled=labelled)
      out.update(self.probe_and_offline(seed, train, labelled, novq, refs, tag="_novq", offline=False))
      out.update(self.online(seed, train, novq, refs, sl=False, tag="online_rl_no_sl_no_vq"))
    if c.ablations.labels and ablate and not c.stage1.labels.fraction:
      # Beyond the paper (LAOM): a small fraction of the training windows keeps its action labels in stage 1.
      labels = latents["_labels"] = self.latent_stages(seed, train, use_vq=c.vq.enabled, tag="_labels",
                                                       labelled=labelled, label_fraction=c.ablations.labels)
      out.update(self.probe_and_offline(seed, train, labelled, labels, refs, tag="_labels"))
      out.update(self.online(seed, train, labels, refs, sl=True, tag="online_labels"))
    return out, latents

  def stage1(self, seed: int, train: Windows, use_vq: bool, tag: str, labelled: Windows | None = None,
             label_fraction: float | None = None):
    """Stage 1; with `labelled`, the latent probe's held-out accuracy is logged every `loop.eval_every` steps;
    `label_fraction` overrides `stage1.labels.fraction` (the labels ablation)."""
    c = self.config
    if label_fraction is not None:
      c = ml_collections.ConfigDict(c.to_dict())
      c.stage1.labels.fraction = float(label_fraction)
    task = stages.stage1_task(c, train, f"seed{seed}/stage1{tag}", seed, use_vq, num_actions=self.num_actions)
    if labelled is not None:
      def evaluate(state, step):
        _, acc, *_ = self.probe(seed, state.train.params["idm"], train, labelled, [c.probe.labels])
        return {"probe_accuracy": float(acc[0])}
      task = dataclasses.replace(task, evaluate=evaluate)
    s1, _ = run(task, c.loop, self.workdir, self.writer, seed)
    return s1

  def latent_stages(self, seed: int, train: Windows, use_vq: bool, tag: str,
                    labelled: Windows | None = None, label_fraction: float | None = None) -> dict:
    c = self.config
    s1 = self.stage1(seed, train, use_vq, tag, labelled, label_fraction)
    idm_params = s1.train.params["idm"]
    s2, _ = run(stages.stage2_task(c, train, idm_params, f"seed{seed}/stage2{tag}", seed), c.loop,
                self.workdir, self.writer, seed)
    return {"idm": idm_params, "fdm": s1.train.params["fdm"], "vq": s1.vq, "policy": s2.train.params,
            "use_vq": use_vq, "tag": tag}

  def labelled_split(self, seed: int, labelled: Windows):
    """Disjoint decoder-training and held-out windows of the action-labelled set, with their true actions."""
    c = self.config
    n_train = max(max(c.offline.sizes), c.probe.labels)
    ids = np.random.default_rng([seed, 7]).permutation(labelled.num_windows)
    if len(ids) < n_train + c.probe.test:
      n_train = min(n_train, len(ids) // 2)
    tr, te = ids[:n_train], ids[len(ids) - min(c.probe.test, len(ids) - n_train):]
    actions = lambda w: stages.true_actions(labelled.gather(w, keys=(), labels=("action",)), self.k)
    return tr, te, actions(tr), actions(te)

  def idm_latents(self, idm_params, data: Windows, ids: np.ndarray) -> np.ndarray:
    idm = models.idm(self.config)
    return decode.embed(lambda w: idm.apply(idm_params, w), data.obs(ids, "image"))

  def standardiser(self, seed: int, idm_params, train: Windows) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the IDM's latents on 4,096 unlabelled training windows (decoders see standardised ones)."""
    unlabelled = np.random.default_rng([seed, 8]).integers(0, train.num_windows, 4096)
    return decode.standardiser(self.idm_latents(idm_params, train, unlabelled))

  def probe(self, seed: int, idm_params, train, labelled, sizes):
    """Decoders trained on the IDM's latents, one per labelled-set size, with their held-out accuracy and
    balanced accuracy: `(decoders, accuracy, balanced_accuracy, mean, std, n_test)`."""
    c = self.config
    tr, te, y_tr, y_te = self.labelled_split(seed, labelled)
    mean, std = self.standardiser(seed, idm_params, train)
    x_tr = (self.idm_latents(idm_params, labelled, tr) - mean) / std
    x_te = (self.idm_latents(idm_params, labelled, te) - mean) / std
    decoders = decode.fit_decoders(stage_rng(seed, "probe"), x_tr, y_tr, sizes, self.num_actions,
                                   c.model.decoder_hidden, c.probe.steps, c.probe.lr, c.probe.batch_size)
    acc = decode.decoder_accuracy(decoders, x_te, y_te, c.model.decoder_hidden, self.num_actions)
    balanced = decode.balanced_accuracy(decoders, x_te, y_te, c.model.decoder_hidden, self.num_actions)
    return decoders, acc, balanced, mean, std, len(te)

  def probe_and_offline(self, seed, train, labelled, lapo, refs, tag, offline=True) -> dict:
    c = self.config
    sizes = sorted(set(c.offline.sizes) | {c.probe.labels}) if offline else [c.probe.labels]

    def compute():
      decoders, acc, balanced, mean, std, n_test = self.probe(seed, lapo["idm"], train, labelled, sizes)
      i = sizes.index(c.probe.labels)
      res = {f"probe_accuracy{tag}": float(acc[i]), f"probe_balanced_accuracy{tag}": float(balanced[i]),
             "probe_labels": c.probe.labels, "probe_test_transitions": n_test}
      if offline:
        res.update(self.policy_fit(seed, lapo, labelled, decode.take(decoders, i), mean, std, tag))
        apply_fn = decode.offline_policy(c, self.num_actions)
        sweep = {}
        for i, n in enumerate(sizes):
          if n not in c.offline.sizes:
            continue
          params = {"policy": lapo["policy"], "decoder": decode.take(decoders, i), "mean": mean, "std": std}
          ret = self.evaluate(apply_fn, params, seed, f"offline{n}{tag}")
          sweep[str(n)] = {"return": ret, "normalised": report.normalised(ret, refs),
                           "probe_accuracy": float(acc[i])}
        res[f"offline_sweep{tag}"] = sweep
      return res

    return io.cached_json(self.path(f"seed{seed}", f"probe{tag}.json"), compute)

  def policy_fit(self, seed, lapo, labelled, decoder, mean, std, tag) -> dict:
    """Why a decoded latent policy acts as it does, on the probe's held-out windows: how much of the IDM latent's
    variance the latent policy pi(o_t) explains (R^2) and the true action alone explains, and how often the
    probe's decoder applied to pi(o_t) picks the action the expert took."""
    _, te, _, y_te = self.labelled_split(seed, labelled)
    z = self.idm_latents(lapo["idm"], labelled, te)
    pol = models.policy(self.config)
    z_pi = decode.embed(lambda o: pol.apply(lapo["policy"], o), labelled.obs(te, "image")[:, self.k])
    dec = models.decoder(self.config, self.num_actions)
    pred = decode.embed(lambda x: dec.apply(decoder, x), (z_pi - mean) / std).argmax(-1)
    return {f"latent_policy_r2{tag}": decode.r_squared(z, z_pi),
            f"latent_action_share{tag}": decode.label_share(z, y_te),
            f"decoded_policy_agreement{tag}": float(np.mean(pred == y_te))}

  def oracle(self, seed, train, labelled) -> float:
    def compute():
      task = stages.supervised_idm_task(self.config, train, self.num_actions, f"seed{seed}/oracle", seed)
      state, _ = run(task, self.config.loop, self.workdir, self.writer, seed)
      _, te, _, y_te = self.labelled_split(seed, labelled)
      net = models.idm(self.config, out=self.num_actions)
      pred = decode.embed(lambda w: net.apply(state.params, w), labelled.obs(te, "image")).argmax(-1)
      present = [a for a in range(self.num_actions) if np.any(y_te == a)]
      return {"accuracy": float(np.mean(pred == y_te)),
              "balanced_accuracy": float(np.mean([np.mean(pred[y_te == a] == a) for a in present]))}
    res = io.cached_json(self.path(f"seed{seed}", "oracle.json"), compute)
    return res["accuracy"], res["balanced_accuracy"]

  def random_idm(self, seed, train, labelled) -> float:
    c = self.config
    def compute():
      sample = jnp.asarray(train.obs(np.arange(1), "image"))
      params = models.idm(c).init(stage_rng(seed, "random_idm"), sample)
      _, acc, balanced, *_ = self.probe(seed, params, train, labelled, [c.probe.labels])
      return {"accuracy": float(acc[0]), "balanced_accuracy": float(balanced[0])}
    res = io.cached_json(self.path(f"seed{seed}", "random_idm.json"), compute)
    return res["accuracy"], res["balanced_accuracy"]

  def online(self, seed, train, lapo, refs, sl: bool, tag: str) -> dict:
    c = self.config
    def compute():
      mean, std = self.standardiser(seed, lapo["idm"], train)
      apply_fn, init_params, trainable, aux = decode.online_policy(
          c, self.num_actions, self.obs_example(), lapo["policy"], lapo["idm"], stage_rng(seed, f"{tag}/init"),
          mean, std, supervised=sl)
      ppo_cfg = ml_collections.ConfigDict(c.online.to_dict())
      if not sl:
        ppo_cfg.loss_weights.sl_decoder = 0.0
      params = self.ppo_run(f"seed{seed}/{tag}", apply_fn, init_params, ppo_cfg, seed, trainable, aux)
      ret = self.evaluate(apply_fn, params, seed, tag)
      return {f"{tag}_return": ret, f"{tag}_normalised": report.normalised(ret, refs)}
    return io.cached_json(self.path(f"seed{seed}", f"{tag}.json"), compute)

  def scratch(self, seed, refs) -> dict:
    c = self.config
    def compute():
      apply_fn, init_fn = self.actor_critic(c.scratch_net)
      params = init_fn(stage_rng(seed, "scratch/init"), self.obs_example())
      ppo_cfg = ml_collections.ConfigDict(c.scratch.to_dict())
      ppo_cfg.total_env_steps = c.online.total_env_steps
      params = self.ppo_run(f"seed{seed}/scratch", apply_fn, params, ppo_cfg, seed)
      ret = self.evaluate(apply_fn, params, seed, "scratch")
      return {"scratch_return": ret, "scratch_normalised": report.normalised(ret, refs)}
    return io.cached_json(self.path(f"seed{seed}", "scratch.json"), compute)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) the whole LAPO pipeline and writes results.json, metrics and plots into `workdir`."""
  lapo = Lapo(config, workdir)
  expert_apply, expert_params, refs = None, None, None
  if config.data.policy == "expert":
    expert_apply, expert_params = lapo.expert()
    refs = lapo.references(expert_apply, expert_params)
  train, labelled, data_info = lapo.datasets(expert_apply, expert_params)
  seeds = [config.seed + i for i in range(config.num_seeds)]
  per_seed, latents = [], None
  for seed in seeds:
    out, seed_latents = lapo.run_seed(seed, train, labelled, refs)
    per_seed.append(out)
    latents = latents or seed_latents    # the first seed's models are plotted
  results = report.summarise(config, refs, data_info, per_seed)
  results["plots"] = report.plots_for(lapo, labelled, per_seed, refs, latents)
  write_results(workdir, results, report.markdown(results))
  lapo.writer.close()
  return results
