"""APV end to end (paper Sec. 4.1, Fig. 5-6): videos -> action-free pre-training -> fine-tuning of every variant on
every target task and seed -> success-rate curves and the final table (`report.py`): `results.json`, `results.md`,
PNGs.

Every stage is a stage of the one loop (`vidrl_jax.train.run`) in `workdir`, so a rerun resumes:
- videos (`config.videos`): `config.videos.dirs` (e.g. the official APV/DreamerV2 episode directories, only
  read), or Meta-World scripted experts on the `videos.tasks` (disjoint from the targets) from several views,
  written to `<workdir>/data/videos` (`videos.py`);
- `pretrain`: the action-free video model (`agent.pretrain_task`); `config.pretrain.workdir` points at another
  run's workdir to take its finished `pretrain` stage instead (read only); then the Fig. 8 probe (`probe.py`);
- `finetune/<task>/<variant>/seed<s>`: the online agent (`agent.finetune_task`) on the image Meta-World task
  (dense reward, as the official `metaworld` suite), evaluated every `finetune.eval_every` env steps by greedy
  episodes of its sparse-success twin: success rate (an episode succeeds if any step does); for the first seed,
  the fine-tuned model's open-loop predictions of held-out greedy episodes (`plot_finetuned`).

A variant is a set of config overrides on the same code (`VARIANTS`): APV; DreamerV2 from scratch; the ablations
of Fig. 6b (no bonus / no pre-training) and the fine-tuning schemes of Fig. 6a (naive) and Fig. 7b (encoder and
decoder only).
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
import numpy as np

from vidrl_jax import io, plots
from vidrl_jax.config import apply_overrides
from vidrl_jax.envs.host import BatchEnv
from vidrl_jax.envs.metaworld import MetaWorldEnv
from vidrl_jax.errors import VidrlError
from vidrl_jax.methods.apv import agent, report, videos
from vidrl_jax.methods.apv import model as model_lib
from vidrl_jax.methods.apv import probe as probe_lib
from vidrl_jax.train import MetricWriter, run
from vidrl_jax.train.loop import restore_finished

VARIANTS: dict[str, dict] = {
    "apv": {},                                                   # stacked, pre-trained, video bonus
    "dreamerv2": {"model.kind": "single", "finetune.load": (), "bonus.beta": 0.0},
    "apv_no_bonus": {"bonus.beta": 0.0},                         # Fig. 6b "APV w/o int"
    "apv_no_pretrain": {"finetune.load": ()},                    # Fig. 6b "APV w/o pre" (bonus on a random model)
    "naive_ft": {"model.kind": "single", "finetune.load": ("encoder", "decoder", "rssm"), "bonus.beta": 0.0},
    "encdec_ft": {"model.kind": "single", "finetune.load": ("encoder", "decoder"), "bonus.beta": 0.0},
}


def variant_config(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise VidrlError(f"unknown APV variant {variant!r}; use some of {sorted(VARIANTS)}")
  return apply_overrides(config, VARIANTS[variant])


class Apv:
  """What the stages share: config, workdir, writer."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config, self.workdir = config, workdir
    self.writer = MetricWriter(workdir)
    for v in config.variants:
      variant_config(config, v)
    overlap = sorted(set(config.env.tasks) & set(config.videos.tasks))
    if overlap and not config.videos.dirs:
      raise VidrlError(f"the video tasks {overlap} are also target tasks; APV pre-trains on other tasks' videos: "
                       f"change videos.tasks or env.tasks")

  def env(self, task: str, reward: str = "dense") -> MetaWorldEnv:
    e = self.config.env
    return MetaWorldEnv(task, image_size=e.image_size, camera=e.camera, max_steps=e.max_steps, reward=reward,
                        layout_seed=None if e.layout_seed < 0 else e.layout_seed)

  def video_dirs(self) -> list[str]:
    v = self.config.videos
    if v.dirs:
      return list(v.dirs)
    out = os.path.join(self.workdir, "data", "videos")
    summary = videos.write_videos(out, tuple(v.tasks), episodes_per_view=v.episodes_per_view, views=tuple(v.views),
                                  seed=self.config.seed, image_size=self.config.env.image_size,
                                  max_steps=v.max_steps, noise=v.noise)
    self.writer.write("videos", 0, {k: float(x) for k, x in summary.items() if isinstance(x, (int, float))})
    return [out]

  def pretrained(self) -> dict:
    """The pre-trained video model's params (this workdir's `pretrain` stage, or `pretrain.workdir`'s)."""
    c = self.config
    source = c.pretrain.workdir
    data = videos.load_videos(self.video_dirs(), c.env.image_size) if not source else None
    windows = data.windows(int(c.pretrain.length)) if data is not None else None
    task = agent.pretrain_task("pretrain", windows, c, c.seed)
    if source:
      return restore_finished(task, source, c.seed).params
    t0 = time.time()
    state, _ = run(task, c.loop, self.workdir, self.writer, c.seed)
    self.writer.write("pretrain", int(c.pretrain.steps), {"seconds": time.time() - t0})
    params = jax.device_get(state.params)
    self.plot_predictions(params, windows)
    return params

  def probe(self, params: dict) -> dict:
    """Fig. 8 (`probe.py`) on the first target task: held-out state and reward regression error from the
    pre-trained and a randomly initialised video model's features; probe.json and probe.png, made once (a rerun
    reads probe.json)."""
    c = self.config
    path = io.join(self.workdir, "probe.json")
    if io.exists(path):
      return io.read_json(path)
    wm, task = model_lib.video_model(c.model), c.env.tasks[0]
    models = {"pre-trained": params, "random init": jax.device_get(wm.init(jax.random.key(c.seed + 1)))}
    out = probe_lib.probe(wm, models, lambda: self.env(task), c.probe, c.seed)
    out = {"task": task, "models": out}
    io.write_json(path, out)
    series = {f"{m}: {t}": (r["steps"], r["error"]) for m, d in out["models"].items() for t, r in d.items()}
    plots.curves(io.join(self.workdir, "probe.png"), series, "regression head's training steps",
                 "held-out MSE / variance", f"Fig. 8 probe on {task} (random-action episodes)")
    self.writer.write("probe", 0, {f"{t}/{m}": r["final"] for m, d in out["models"].items() for t, r in d.items()})
    return out

  def plot_predictions(self, params: dict, windows) -> str:
    """open_loop_pretrained.png: 4 video windows, true frames above the model's (5 context frames, then open
    loop), the last windows of the dataset (not a held-out set: the videos are all used for pre-training)."""
    wm = model_lib.video_model(self.config.model)
    n = windows.population()
    frames = windows.gather(np.arange(max(n - 4, 0), n))["obs"]["image"]
    context = min(5, frames.shape[1] - 1)
    pred = jax.jit(lambda p, x: model_lib.open_loop(wm, p, x, context, jax.random.PRNGKey(0)))(params, frames)
    return plots.image_grid(io.join(self.workdir, "open_loop_pretrained.png"), _strips(frames, pred, "video"),
                            f"pre-trained video model: {context} context frames, then open loop")

  def plot_finetuned(self, task: str, variant: str, c: ml_collections.ConfigDict, state, eval_env) -> str:
    """open_loop_finetuned_<task>_<variant>.png, made once: the fine-tuned action-conditional model on 4 held-out
    greedy episodes (`agent.greedy_episodes`), their first `finetune.length` frames, true above the model's (5
    context frames, then open loop on the episode's actions: `model.open_loop_actions`)."""
    path = io.join(self.workdir, f"open_loop_finetuned_{task}_{variant}.png")
    if io.exists(path):
      return path
    episodes = agent.greedy_episodes(state, eval_env, c, c.seeds[0], 4)
    T = min([int(c.finetune.length)] + [len(e["obs"]["image"]) for e in episodes])
    frames = np.stack([e["obs"]["image"][:T] for e in episodes])
    actions = np.stack([np.concatenate([np.zeros_like(e["action"][:1]), e["action"]])[:T] for e in episodes])
    model, context = model_lib.finetune_model(eval_env.action_dim, c.model), min(5, T - 1)
    pred = jax.jit(lambda p, x, a: model_lib.open_loop_actions(model, p, x, a, context, jax.random.PRNGKey(0)))(
        state.params, frames, actions)
    return plots.image_grid(path, _strips(frames, pred, "episode"),
                            f"{variant} fine-tuned on {task}: {context} context frames, then open loop on the "
                            f"episode's actions")

  def finetune(self, task: str, variant: str, seed: int, pretrained: dict | None) -> dict:
    c = variant_config(self.config, variant)
    eval_env = BatchEnv([self.env(task, "sparse") for _ in range(c.finetune.eval_envs)])
    stage = agent.finetune_task(f"finetune/{task}/{variant}/seed{seed}", self.env(task), eval_env, c, seed,
                                pretrained)
    t0 = time.time()
    state, metrics = run(stage, c.loop, self.workdir, self.writer, seed)   # finished: restored, not trained
    metrics = {**metrics, "seconds": time.time() - t0}
    if seed == c.seeds[0]:
      self.plot_finetuned(task, variant, c, jax.device_get(state), eval_env)
    return metrics


def _strips(frames: np.ndarray, pred: jax.Array, name: str) -> dict:
  """`plots.image_grid`'s rows: per sequence, about 10 of its true frames (uint8) above the same predicted ones."""
  pred, every = np.asarray(pred), max(frames.shape[1] // 10, 1)
  rows = {}
  for i in range(len(frames)):
    rows[f"{name} {i}: true"] = frames[i][::every]
    rows[f"{name} {i}: model"] = (pred[i][::every] * 255).astype(np.uint8)
  return rows


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  apv = Apv(config, workdir)
  needs_pretrained = any(variant_config(config, v).finetune.load for v in config.variants)
  pretrained = apv.pretrained() if needs_pretrained else None
  probed = apv.probe(pretrained) if pretrained is not None and not config.pretrain.workdir and \
      config.probe.episodes > 0 else None
  runs: dict[str, list] = {}
  for task in config.env.tasks:
    for variant in config.variants:
      for seed in config.seeds:
        runs.setdefault(f"{task}/{variant}", []).append(apv.finetune(task, variant, seed, pretrained))
  return report.report(config, workdir, [apv.writer], runs, probe=probed)
