"""APV end to end on the smoke preset (videos -> pre-training -> fine-tuning of APV, DreamerV2 and naive fine-tuning
on 16x16 Meta-World reach): notebooks/apv.ipynb executed as CI runs the notebooks (tests/test_notebooks.py), its run
shared by the tests below: the stages it writes, the results and plots, a rerun that resumes without training again
(and makes a missing plot from the checkpoint), a fine-tuning run killed mid-way that resumes exactly, another
workdir's pre-training taken read-only, and bad configs."""

from __future__ import annotations

import json
import os
import sys

import jax
import numpy as np
import pytest

pytest.importorskip("metaworld")

from vidrl_jax import config as config_lib  # noqa: E402
from vidrl_jax.errors import VidrlError  # noqa: E402
from vidrl_jax.methods.apv import agent, pipeline  # noqa: E402
from vidrl_jax.train import MetricWriter, run  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _config(**overrides):
  import importlib.util
  spec = importlib.util.spec_from_file_location("apv_config", os.path.join(ROOT, "configs", "apv.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return config_lib.apply_overrides(module.get_config("smoke"), overrides)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  from test_notebooks import check_executed, execute
  workdir = str(tmp_path_factory.mktemp("apv_smoke"))
  nb, seconds = execute("apv", workdir)
  print(f"apv.ipynb executed in {seconds:.0f} s")
  check_executed(nb, workdir)
  results = json.load(open(os.path.join(workdir, "results.json")))["results"]
  return _config(), workdir, results


def test_smoke_writes_every_stage_and_the_results(smoke):
  config, workdir, results = smoke
  assert set(results) == {f"reach-v3/{v}" for v in config.variants}
  for key, r in results.items():
    assert len(r["final"]) and 0.0 <= r["final"]["mean"] <= 1.0
    assert r["curve"]["x"][-1] == config.finetune.env_steps
  stages = {row["stage"] for row in MetricWriter(workdir).rows()}
  assert {"videos", "pretrain"} <= stages
  assert all(f"finetune/reach-v3/{v}/seed0" in stages for v in config.variants)
  saved = json.load(open(os.path.join(workdir, "results.json")))
  assert set(saved["results"]) == set(results)
  assert os.path.exists(os.path.join(workdir, "curves_reach-v3.png"))
  assert os.path.exists(os.path.join(workdir, "results.md"))
  assert os.path.exists(os.path.join(workdir, "open_loop_pretrained.png"))
  assert all(os.path.exists(os.path.join(workdir, f"open_loop_finetuned_reach-v3_{v}.png")) for v in config.variants)
  probe = saved["probe"]       # Fig. 8: both models, both targets, finite held-out errors from step 0
  assert set(probe["models"]) == {"pre-trained", "random init"} and os.path.exists(os.path.join(workdir, "probe.png"))
  for by_target in probe["models"].values():
    assert set(by_target) == {"state", "reward"}
    assert all(r["steps"][0] == 0 and np.all(np.isfinite(r["error"])) for r in by_target.values())


def test_rerun_resumes_without_training_again(smoke):
  """A missing open-loop plot is made again from the finished stage's checkpoint."""
  config, workdir, results = smoke
  before = len(MetricWriter(workdir).rows())
  plot = os.path.join(workdir, "open_loop_finetuned_reach-v3_apv.png")
  os.remove(plot)
  again = pipeline.train_and_evaluate(config, workdir)
  assert {k: v["final"] for k, v in again.items()} == {k: v["final"] for k, v in results.items()}
  train_rows = [r for r in MetricWriter(workdir).rows() if "loss/total" in r]
  assert len(train_rows) == len([r for r in MetricWriter(workdir).rows()[:before] if "loss/total" in r])
  assert os.path.exists(plot)


def test_a_killed_finetuning_resumes_exactly(smoke, tmp_path):
  """Stopped after two loop steps (mid-episode, replay, carry and bonus queue saved) and rerun = uninterrupted."""
  config, workdir, _ = smoke
  apv = pipeline.Apv(config, workdir)
  pretrained = apv.pretrained()

  def stage():
    eval_env = pipeline.BatchEnv([apv.env("reach-v3", "sparse") for _ in range(config.finetune.eval_envs)])
    return agent.finetune_task("ft", apv.env("reach-v3"), eval_env, config, 0, pretrained)

  full_dir, cut_dir = str(tmp_path / "full"), str(tmp_path / "cut")
  full, _ = run(stage(), config.loop, full_dir, MetricWriter(full_dir), 0)
  run(stage(), config.loop, cut_dir, MetricWriter(cut_dir), 0, stop_after=4)
  resumed, _ = run(stage(), config.loop, cut_dir, MetricWriter(cut_dir), 0)
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(full), jax.device_get(resumed))


def test_pretraining_from_another_workdir_is_only_read(smoke, tmp_path):
  config, workdir, _ = smoke
  before = sorted(os.listdir(os.path.join(workdir, "pretrain")))
  other = _config(**{"pretrain.workdir": workdir, "variants": ("apv",)})
  params = pipeline.Apv(other, str(tmp_path / "b")).pretrained()
  mine = pipeline.Apv(config, workdir).pretrained()
  jax.tree.map(np.testing.assert_array_equal, params, mine)
  assert sorted(os.listdir(os.path.join(workdir, "pretrain"))) == before
  with pytest.raises(VidrlError, match="other shapes|does not fit"):
    wide = _config(**{"pretrain.workdir": workdir, "model.cnn_width": 3})
    pipeline.Apv(wide, str(tmp_path / "c")).pretrained()
  with pytest.raises(VidrlError, match="no checkpoints"):
    pipeline.Apv(_config(**{"pretrain.workdir": str(tmp_path)}), str(tmp_path / "d")).pretrained()


def test_bad_configs_stop_with_one_sentence(tmp_path):
  with pytest.raises(VidrlError, match="unknown APV variant"):
    pipeline.Apv(_config(variants=("apv", "dreamer3")), str(tmp_path))
  with pytest.raises(VidrlError, match="also target tasks"):
    pipeline.Apv(_config(**{"videos.tasks": ("reach-v3",)}), str(tmp_path))
  with pytest.raises(VidrlError, match="model.kind"):
    agent.agent(4, _config(**{"model.kind": "triple"}), 10)
