"""RLV on Meta-World (`vidrl_jax.methods.rlv.manipulation`): the conditions a config asks for, the success-rate
evaluation env, the statistics against hand-computed values, bad configs, and the smoke presets end to end (state;
16x16 pixels with a 'strong' pool), including a rerun that resumes without training again."""

from __future__ import annotations

import json
import os
import re

import ml_collections
import numpy as np
import pytest

pytest.importorskip("metaworld")

from vidrl_jax.data import ownership  # noqa: E402
from vidrl_jax.errors import VidrlError  # noqa: E402
from vidrl_jax.methods.rlv import manipulation as mp  # noqa: E402
from vidrl_jax.train import MetricWriter, run, stage_finished  # noqa: E402


def _config(preset: str, **overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.manipulation = mp.manipulation_config(preset)
  c.manipulation.update(overrides)
  return c


def test_conditions_of_the_paper_preset():
  """Per task: state view sac, rlv (domain none), rnd; 48x48 view sac, rnd, rlv per domain and
  rlv_no_adversarial per shifted domain (the state view has domain 'none' only); Fig. 8's four ablations on the
  Visual Pusher's pool."""
  m = mp.manipulation_config("paper")
  names = [c["name"] for c in mp.conditions(m)]
  assert len(names) == 3 * (3 + 7) + 4 and len(set(names)) == len(names)
  assert sorted(n for n in names if "ablation" in n) == [f"push-v3/img48/none/ablation_{a}_{b}" for a, b in (
      ("actions", "true"), ("actions", "zeros"), ("rewards", "true"), ("rewards", "zeros"))]
  door = sorted(n for n in names if n.startswith("door-open-v3/"))
  assert door == sorted(["door-open-v3/state/sac", "door-open-v3/state/none/rlv", "door-open-v3/state/rnd",
                         "door-open-v3/img48/sac", "door-open-v3/img48/rnd", "door-open-v3/img48/none/rlv",
                         "door-open-v3/img48/weak/rlv", "door-open-v3/img48/strong/rlv",
                         "door-open-v3/img48/weak/rlv_no_adversarial", "door-open-v3/img48/strong/rlv_no_adversarial"])
  assert m.seeds == (0, 1, 2, 3, 4) and m.sac_image.critic_hidden == (512, 256, 256)
  assert m.sac_state.actor_hidden == (256, 256) and (m.rlv.c_large, m.rlv.c_small, m.rlv.c3) == (10.0, 0.0, 1e-3)
  assert m.rlv.discriminator_lr == 3e-8 and m.sac_state.train_every * m.sac_state.updates_per_step == 50


class _Fake:
  """A stand-in MetaWorldEnv whose sparse reward is 1.0 on steps 3 and 4."""
  name, obs_spec, action_dim, max_steps = "fake", {"state": ((1,), np.float32)}, 4, 6

  def reset(self, seed):
    self.t = 0
    return {"state": np.zeros(1, np.float32)}

  def step(self, action):
    self.t += 1
    return {"state": np.full(1, self.t, np.float32)}, float(self.t in (3, 4)), False


def test_success_once_ends_an_episode_at_its_first_success():
  env = mp.SuccessOnce(_Fake())
  env.reset(0)
  steps = [env.step(np.zeros(4))[1:] for _ in range(3)]
  assert steps == [(0.0, False), (0.0, False), (1.0, True)]


def test_summary_statistics_by_hand():
  """SAC's mean curve [0, .25, 1] (final 1.0: threshold 1.0, reached at 30); RLV's [.25, 1, 1] reaches it at 20:
  ratio 2/3. A condition below every threshold never reaches it."""
  x = np.array([10, 20, 30])
  curves = {"t/state/sac": [(x, np.array([0, .5, 1.])), (x, np.array([0, 0, 1.]))],
            "t/state/none/rlv": [(x, np.array([0, 1, 1.])), (x, np.array([.5, 1, 1.]))],
            "t/state/rnd": [(x, np.array([0, 0, 0.])), (x, np.array([0, 0, 0.]))]}
  r = mp.summarise(mp.manipulation_config("smoke"), {}, curves, {})
  assert r["speedup"]["t/state/none/rlv"]["steps_a"] == 20 and r["speedup"]["t/state/none/rlv"]["steps_b"] == 30
  assert r["speedup"]["t/state/none/rlv"]["ratio"] == pytest.approx(2 / 3)
  assert r["speedup"]["t/state/rnd"]["ratio"] is None and "t/state/sac" not in r["speedup"]
  assert r["final"]["t/state/sac"]["mean"] == 1.0 and r["curves"]["t/state/none/rlv"]["mean"] == [.25, 1, 1]
  assert r["final"]["t/state/none/rlv"]["se"] == 0.0 and mp.baseline_of("t/img48/weak/rlv") == "t/img48/sac"
  rows = mp.condition_table(r, "success", 2)
  assert rows[2].startswith("| t/state/none/rlv | 2 | 30 | 1.00 +- 0.00 | 1.00 [1.00, 1.00] | 20 vs 30 at 1.00 (0.67")
  assert rows[4] == "| t/state/sac | 2 | 30 | 1.00 +- 0.00 | 1.00 [1.00, 1.00] | baseline |"


@pytest.mark.parametrize("overrides, message", [
    (dict(methods=("sac", "ppo")), "methods"), (dict(seeds=()), "seeds is empty"),
    (dict(methods=("rlv",)), "lacks 'sac'"), (dict(domains=("none", "foggy")), "domains"),
    (dict(image_sizes=(-1,)), "image_sizes"), (dict(episodes=0), "episodes"),
    (dict(ablation_conditions=("drawer-open-v3/img48/none",)), "ablation_conditions")])
def test_bad_configs_say_what_to_fix(tmp_path, overrides, message):
  with pytest.raises(VidrlError, match=message) as e:
    mp.train_and_evaluate_manipulation(_config("smoke", **overrides), str(tmp_path))
  assert not re.search(r"[.;]\s+[A-Z]", str(e.value)) and not os.listdir(tmp_path)   # one sentence, nothing written
  with pytest.raises(VidrlError, match="unknown manipulation preset"):
    mp.manipulation_config("huge")


def _stage_rows(workdir: str) -> dict[str, int]:
  rows = MetricWriter(workdir).rows()
  return {s: sum(r["stage"] == s for r in rows) for s in {r["stage"] for r in rows}}


def test_smoke_end_to_end_and_resume(tmp_path):
  workdir = str(tmp_path)
  results = mp.train_and_evaluate_manipulation(_config("smoke"), workdir)
  pool = os.path.join(workdir, "manipulation", "data", "drawer-open-v3_none_state")
  assert ownership.state(pool) == "complete" and results["pools"]["drawer-open-v3/state/none"]["episodes"] == 3
  assert set(results["curves"]) == {"drawer-open-v3/state/sac", "drawer-open-v3/state/none/rlv",
                                    "drawer-open-v3/state/none/ablation_actions_true"}
  for curve in results["curves"].values():   # evaluation after every 20-step episode of 3, both seeds
    assert curve["env_steps"] == [20, 40, 60] and curve["n"] == 2
    assert all(0.0 <= v <= 1.0 for v in curve["mean"])
  stages = _stage_rows(workdir)
  assert set(stages) == {f"mw/drawer-open-v3/state/{c}/seed{s}" for c in ("sac", "none/rlv",
                                                                         "none/ablation_actions_true") for s in (0, 1)}
  rlv_rows = MetricWriter(workdir).rows("mw/drawer-open-v3/state/none/rlv/seed1")
  assert any("aux/loss/inverse" in r for r in rlv_rows)
  assert not any("aux/loss/adversarial" in r for r in rlv_rows)   # no domain shift: c3 = 0, as the paper
  with open(os.path.join(workdir, "manipulation", "results.json")) as f:
    assert json.load(f)["curves"] == json.loads(json.dumps(results["curves"]))
  assert os.path.exists(os.path.join(workdir, "manipulation", "drawer-open-v3_state_none.png"))
  again = mp.train_and_evaluate_manipulation(_config("smoke"), workdir)
  assert _stage_rows(workdir) == stages   # nothing trained or logged again
  assert again["curves"] == results["curves"] and again["final"] == results["final"]
  assert again["seconds"]["total"] < results["seconds"]["total"] / 3
  name = "mw/drawer-open-v3/state/none/rlv/seed1"
  assert not os.path.exists(os.path.join(workdir, name, "collector"))   # a finished stage's replay is dropped


def test_an_interrupted_stage_resumes_to_the_same_rows(tmp_path):
  """Stopped after loop step 4 of 6 (`run(stop_after=4)`): the pipeline resumes it and logs the rows of an
  uninterrupted run (every metric, the critic loss of step 6 included)."""
  workdir, config = str(tmp_path), _config("smoke", seeds=(1,), ablation_conditions=())
  m = config.manipulation
  cond = next(c for c in mp.conditions(m) if c["method"] == "rlv")
  pools = mp.make_pools(m, os.path.join(workdir, "manipulation"))
  name = mp.stage_name(cond, 1)
  run(mp.make_task(m, cond, 1, pools, {}), m.loop, workdir, MetricWriter(workdir), 1, stop_after=4)
  assert not stage_finished(workdir, name, 6)
  mp.train_and_evaluate_manipulation(config, workdir)
  assert stage_finished(workdir, name, 6)
  whole = str(tmp_path / "whole")
  run(mp.make_task(m, cond, 1, pools, {}), m.loop, whole, MetricWriter(whole), 1)
  before = _comparable(MetricWriter(whole).rows(name))
  after = _comparable(MetricWriter(workdir).rows(name))
  assert after == before and any("critic_loss" in r and r["step"] == 6 for r in after)


def _comparable(rows: list[dict]) -> list[dict]:
  return sorted(({k: v for k, v in r.items() if k not in ("time", "steps_per_s")} for r in rows),
                key=lambda r: (r["step"], sorted(r)))


def test_image_smoke_with_a_strong_domain_pool(tmp_path):
  """16x16 pixels only; the pool is rendered in the 'strong' domain (other pixels than the interaction env's)
  and RLV runs its adversarial term."""
  workdir = str(tmp_path)
  try:
    results = mp.train_and_evaluate_manipulation(_config("smoke_image"), workdir)
  except VidrlError as e:
    if "could not render" in str(e):
      pytest.skip(str(e))
    raise
  pool = os.path.join(workdir, "manipulation", "data", "drawer-open-v3_strong_img16")
  assert ownership.state(pool) == "complete"
  with np.load(os.path.join(pool, "000000.npz")) as f:
    assert f["image"].shape == (21, 16, 16, 3) and f["image"].dtype == np.uint8
  assert set(results["curves"]) == {"drawer-open-v3/img16/sac", "drawer-open-v3/img16/strong/rlv"}
  rows = MetricWriter(workdir).rows("mw/drawer-open-v3/img16/strong/rlv/seed0")
  assert any(np.isfinite(r.get("aux/loss/adversarial", np.nan)) for r in rows)
  assert results["curves"]["drawer-open-v3/img16/sac"]["env_steps"] == [20, 40, 60]


def test_a_fixed_layout_gives_every_pool_episode_the_same_start(tmp_path):
  m = _config("smoke", layout_seed=3).manipulation
  pools = mp.make_pools(m, str(tmp_path))
  directory = pools[("drawer-open-v3", 0, "none")]["dir"]
  assert directory.endswith("drawer-open-v3_none_state_layout3")
  starts = [np.load(os.path.join(directory, f"{i:06d}.npz"))["state"][0] for i in range(3)]
  np.testing.assert_array_equal(starts[0], starts[1])
  np.testing.assert_array_equal(starts[0], starts[2])
  free = mp.make_pools(_config("smoke").manipulation, str(tmp_path))[("drawer-open-v3", 0, "none")]["dir"]
  assert not np.array_equal(np.load(os.path.join(free, "000001.npz"))["state"][0], starts[0])
