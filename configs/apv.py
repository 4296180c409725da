"""APV: Reinforcement Learning with Action-Free Pre-Training from Videos (Seo et al., ICML 2022). Presets: smoke,
cpu (default), paper.

Launch (from the repository root, after `bash scripts/setup.sh`):

  .venv/bin/python experiments/apv.py --config configs/apv.py:cpu --workdir runs/apv_cpu
  .venv/bin/python experiments/apv.py --config configs/apv.py:paper --workdir runs/apv_metaworld
  .venv/bin/python experiments/apv.py --config configs/apv.py:paper --config.pretrain.workdir=runs/apv_metaworld \
      --config.variants='("dreamerv2",)' --workdir runs/apv_dreamerv2      # reuse a finished pre-training

Pipeline: action-free videos (Meta-World scripted experts on tasks disjoint from the targets, several camera
views and a visually shifted domain, standing in for the paper's RLBench videos; or `videos.dirs`, e.g. the
official APV/DreamerV2 episode directories, only read) -> pre-training of the action-free video model (Eq. 2) ->
per target task, variant and seed: online fine-tuning (Eq. 6, the stacked model, the video bonus, DreamerV2's
actor-critic) -> success-rate curves (IQM over seeds) and the final table.

- `paper`: the official Meta-World settings (apv_finetuning/configs.yaml `metaworld`, apv_pretraining
  `metaworld_pretrain`): 64x64 images, 1024-wide RSSMs of 32 x 32 categoricals, 48-deep CNNs, 4 x 400 heads,
  episodes of 500 steps, 256k env steps, batch 50 x 50, prefill 5,000, an update every 5 env steps, encoder and
  action-free RSSM frozen for the first 100 updates, beta 1.0, pre-training 600k steps of 16 x 25 at lr 3e-4 with
  KL scale 0.1; six tasks (lever-pull, dial-turn, door-lock, drawer-open, button-press-topdown-wall, reach).
- `cpu`: small images and widths (module PRESETS); measured result and time: README "APV".
- `smoke`: 16x16 frames, tiny nets, a few hundred env steps: seconds per stage (the tests).
"""

from __future__ import annotations

import ml_collections

from vidrl_jax import config as config_lib
from vidrl_jax.methods.apv.bonus import bonus_config
from vidrl_jax.methods.apv.model import model_config
from vidrl_jax.methods.apv.probe import probe_config
from vidrl_jax.rl.dreamer import dreamer_config
from vidrl_jax.train import loop_config
from vidrl_jax.train.optim import optim_config

TARGETS = ("lever-pull-v3", "dial-turn-v3", "door-lock-v3", "drawer-open-v3", "button-press-topdown-wall-v3",
           "reach-v3")
# Pre-training tasks: Meta-World tasks with scripted experts, none of them a target (nor the target's mirror).
VIDEO_TASKS = ("push-v3", "pick-place-v3", "door-open-v3", "drawer-close-v3", "window-open-v3", "window-close-v3",
               "button-press-v3", "coffee-push-v3", "plate-slide-v3", "faucet-open-v3", "handle-press-v3",
               "sweep-into-v3")
VIEWS = (("corner", "none"), ("corner2", "none"), ("corner3", "weak"), ("topview", "none"), (None, "strong"))
DREAMER_OPTIM = dict(eps=1e-5, clip=100.0, weight_decay=1e-6)


def base() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = "apv"
  c.seed = 0
  c.seeds = (0, 1, 2)
  c.env = ml_collections.ConfigDict(dict(
      tasks=TARGETS, image_size=64, camera="corner", max_steps=500,
      layout_seed=0))           # one fixed object/goal layout per task (the official MT1 task instance); -1: a new
                                # layout every episode
  c.videos = ml_collections.ConfigDict(dict(
      dirs=(),                  # () = make them; or episode directories (official APV/DreamerV2 layout), read only
      tasks=VIDEO_TASKS, views=VIEWS, episodes_per_view=10, max_steps=500, noise=0.1))
  c.model = model_config()
  c.pretrain = ml_collections.ConfigDict(dict(
      steps=600_000, batch_size=16, length=25, kl=0.1, optim=optim_config(lr=3e-4, **DREAMER_OPTIM),
      workdir=""))              # '' = this workdir's pretrain stage; or another run's workdir (read only)
  c.finetune = ml_collections.ConfigDict(dict(
      env_steps=256_000, prefill=5000, train_every=5, batch_size=50, length=50, replay_capacity=1_000_000,
      load=("encoder", "decoder", "af_rssm"), freeze_updates=100,
      model_optim=optim_config(lr=3e-4, **DREAMER_OPTIM), enc_optim=optim_config(lr=3e-4, **DREAMER_OPTIM),
      eval_every=10_000, eval_episodes=10, eval_envs=5, log_every=1000, checkpoint_every=10_000))
  c.ac = dreamer_config(discount=0.99, actor_optim=optim_config(lr=8e-5, **DREAMER_OPTIM),
                        critic_optim=optim_config(lr=8e-5, **DREAMER_OPTIM))
  c.bonus = bonus_config(beta=1.0)
  c.probe = probe_config()     # Fig. 8 after pre-training (episodes=0: none)
  c.variants = ("apv", "dreamerv2")
  c.loop = loop_config(log_every=100, checkpoint_every=5000)
  return c


_SMALL = {
    "model.deter": 32, "model.hidden": 32, "model.stoch": 4, "model.classes": 4, "model.cnn_width": 4,
    "model.reward_hidden": (32, 32), "model.image_size": 16, "env.image_size": 16,
    "model.enc_kernels": (4, 4), "model.dec_kernels": (3, 3, 4),
    "ac.actor_hidden": (32, 32), "ac.critic_hidden": (32, 32),
}

PRESETS = {
    "smoke": {
        **_SMALL,
        "seeds": (0,), "env.tasks": ("reach-v3",), "env.max_steps": 30,
        "videos.tasks": ("push-v3",), "videos.views": (("corner", "none"), (None, "strong")),
        "videos.episodes_per_view": 1, "videos.max_steps": 30,
        "pretrain.steps": 4, "pretrain.batch_size": 2, "pretrain.length": 8,
        "finetune.env_steps": 120, "finetune.prefill": 60, "finetune.train_every": 20, "finetune.batch_size": 2,
        "finetune.length": 8, "finetune.replay_capacity": 1000, "finetune.freeze_updates": 1,
        "finetune.eval_every": 60, "finetune.eval_episodes": 2, "finetune.eval_envs": 2, "finetune.log_every": 20,
        "finetune.checkpoint_every": 60, "ac.horizon": 3, "bonus.queue_size": 32, "bonus.k": 4, "bonus.window": 3,
        "probe.episodes": 3, "probe.held_out": 1, "probe.steps": 20, "probe.eval_every": 10,
        "variants": ("apv", "dreamerv2", "naive_ft"), "loop.log_every": 2, "loop.checkpoint_every": 2,
        "loop.progress": False,
    },
    "cpu": {
        "model.deter": 128, "model.hidden": 128, "model.stoch": 16, "model.classes": 16, "model.cnn_width": 8,
        "model.reward_hidden": (128, 128), "model.image_size": 32, "env.image_size": 32,
        "model.enc_kernels": (4, 4, 4), "model.dec_kernels": (6, 5, 4),
        "ac.actor_hidden": (128, 128), "ac.critic_hidden": (128, 128),
        "env.tasks": ("reach-v3",), "env.max_steps": 150,
        "videos.episodes_per_view": 2, "videos.max_steps": 150,
        "pretrain.steps": 3000, "pretrain.batch_size": 16,
        "finetune.env_steps": 15_000, "finetune.prefill": 1500, "finetune.train_every": 10,
        "finetune.batch_size": 8, "finetune.length": 32,
        "finetune.eval_every": 1500, "finetune.eval_episodes": 10, "finetune.log_every": 500,
        "finetune.checkpoint_every": 1500,
        "variants": ("apv", "dreamerv2", "apv_no_bonus", "apv_no_pretrain"),
    },
    "paper": {},
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return config_lib.build(base, PRESETS, arg, __file__)
