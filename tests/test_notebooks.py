"""The Colab notebooks (`notebooks/<method>.ipynb`) executed as CI runs them: a Jupyter kernel of this interpreter,
the CPU, the `smoke` preset injected after the `parameters` cell (papermill's convention), a temporary workdir.

Each notebook runs the same smoke config as the method's end-to-end test did, so the XLA compilation cache is
shared, and the end-to-end checks that test made are made here on the notebook's run (LAPO: every stage's outputs and
an in-process rerun that resumes; AIME: the pendulum table, then the launcher on the same workdir resuming to the
same table; RLV: every Acrobot group, then the launcher resuming its main group; APV: its notebook's run is the
fixture of tests/test_apv_pipeline.py), so executing the notebooks adds little to the suite's time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
METHODS = ("lapo", "aime", "rlv", "apv")
REPO_URL = "https://github.com/vidrl-jax/vidrl_jax"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from test_rlv_pipeline import _check_results as check_rlv_results, _launch as launch_rlv  # noqa: E402


# The LAPO smoke preset on a distractor Breakout (two channels of random-walking dots), so that one run covers every
# stage, every ablation (the LAOM labels one included) and the distractor wrapper.
LAPO_OVERRIDES = {"env.distractors.kind": "dots", "env.distractors.channels": 2}


def execute(method: str, workdir: str, overrides: dict | None = None, then: str = "", timeout: int = 600):
  """Runs notebooks/<method>.ipynb with PRESET='smoke', WORKDIR=workdir and OVERRIDES injected after its parameters
  cell, and the code `then` in a last cell of the same kernel; returns the executed notebook and its wall-clock
  seconds. A cell that raises fails the test."""
  nb = nbformat.read(os.path.join(NOTEBOOKS, f"{method}.ipynb"), as_version=4)
  at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", ()))
  injected = nbformat.v4.new_code_cell(
      f"PRESET = 'smoke'\nWORKDIR = {workdir!r}\nOVERRIDES = {overrides or {}!r}",
      metadata={"tags": ["injected-parameters"]})
  nb.cells.insert(at + 1, injected)
  if then:
    nb.cells.append(nbformat.v4.new_code_cell(then, metadata={"tags": ["test"]}))
  t0 = time.time()
  with pytest.MonkeyPatch.context() as mp:   # the kernel inherits this environment
    mp.setenv("JAX_PLATFORMS", "cpu")
    mp.setenv("MUJOCO_GL", "egl")
    mp.setenv("PYTHONPATH", os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": NOTEBOOKS}}).execute()
  return nb, time.time() - t0


def outputs(nb, kind: str | None = None) -> list:
  return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if kind is None or o.output_type == kind]


def check_executed(nb, workdir: str) -> None:
  """No error output, the kernel was this interpreter, results.json and a plot written, and both shown inline."""
  assert not outputs(nb, "error")
  text = "".join(o.get("text", "") for o in outputs(nb, "stream"))
  assert f"python: {sys.executable}" in text and "backend: cpu" in text
  assert os.path.exists(os.path.join(workdir, "results.json"))
  assert any(f.endswith(".png") for f in os.listdir(workdir))
  shown = [o["data"] for o in outputs(nb) if o.output_type == "display_data"]
  assert any("image/png" in d for d in shown) and any("text/markdown" in d for d in shown)   # plots, results.md
  if importlib.util.find_spec("pandas"):
    assert any("text/html" in d for d in shown)   # the headline table as a DataFrame


# Run again in the notebook's kernel (its compiled programs warm), as a user rerunning the run cell would.
LAPO_RERUN = """metrics_before = open(os.path.join(WORKDIR, "metrics.jsonl")).read()
again = train_and_evaluate(config, WORKDIR)
print("rerun:", json.dumps({"same_probe_accuracy": again["probe_accuracy"] == results["probe_accuracy"],
                            "metrics_unchanged": open(os.path.join(WORKDIR, "metrics.jsonl")).read() == metrics_before}))"""


@pytest.fixture(scope="module")
def lapo_notebook(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("lapo_nb"))
  nb, seconds = execute("lapo", workdir, LAPO_OVERRIDES, then=LAPO_RERUN)
  print(f"lapo.ipynb executed in {seconds:.0f} s")
  return nb, workdir


def test_committed_notebooks_are_clean_and_parametrised():
  for method in METHODS:
    nb = nbformat.read(os.path.join(NOTEBOOKS, f"{method}.ipynb"), as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), f"{method}: strip the outputs"
    params = [c for c in code if "parameters" in c.metadata.get("tags", ())]
    assert len(params) == 1 and 'PRESET = "cpu"' in params[0].source and f'REPO_URL = "{REPO_URL}"' in params[0].source
    assert f"colab.research.google.com/github/{REPO_URL.split('github.com/')[1]}/blob/main/notebooks/{method}.ipynb" \
        in nb.cells[0].source
    assert f"configs/{method}.py:paper" in nb.cells[-1].source


def test_lapo_notebook_writes_every_stage(lapo_notebook):
  nb, workdir = lapo_notebook
  check_executed(nb, workdir)
  results = json.load(open(os.path.join(workdir, "results.json")))
  for key in ("probe_accuracy", "oracle_accuracy", "random_idm_accuracy", "online_normalised",
              "scratch_normalised", "online_rl_no_sl_normalised", "online_rl_no_sl_no_vq_normalised",
              "probe_accuracy_novq", "probe_over_oracle", "probe_over_random_idm", "probe_accuracy_labels",
              "online_labels_normalised", "latent_policy_r2", "latent_action_share", "decoded_policy_agreement",
              "latent_action_share_labels"):
    assert np.isfinite(results[key]["mean"]), key
  assert set(results["offline_sweep_normalised"]) == set(results["offline_sweep_normalised_labels"]) == {"16", "64"}
  for name in ("latent_tsne.png", "latent_tsne_novq.png", "latent_tsne_labels.png", "fdm_predictions.png",
               "online_decoding.png", "offline_decoding.png", "losses.png", "metrics.jsonl", "references.json"):
    assert os.path.exists(os.path.join(workdir, name)), name
  stages = {json.loads(line)["stage"] for line in open(os.path.join(workdir, "metrics.jsonl"))}
  assert {"expert", "seed0/stage1", "seed0/stage2", "seed0/oracle", "seed0/online", "seed0/scratch",
          "seed0/online_rl_no_sl", "seed0/stage1_novq", "seed0/online_rl_no_sl_no_vq", "seed0/stage1_labels",
          "seed0/online_labels"} <= stages
  labelled_stage1 = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))
                     if '"seed0/stage1_labels"' in line]
  assert labelled_stage1 and all("loss/action_ce" in row and "labelled_accuracy" in row
                                 for row in labelled_stage1 if "loss/recon" in row)
  shard = next(os.path.join(r, f) for r, _, fs in os.walk(os.path.join(workdir, "data", "train")) for f in fs
               if f.endswith(".npz"))
  frames = np.load(shard)["obs"]
  assert frames.shape[1:] == (10, 10, 4 + 2)                   # Breakout's 4 channels + 2 distractor channels
  assert frames[..., 4:].any(axis=(1, 2)).all()                # every frame shows its distractors
  # True actions are in the data for evaluation, and the observation-only stages never needed them:
  assert os.path.exists(os.path.join(workdir, "data", "train", "_COMPLETE.json"))


def test_lapo_rerun_resumes_without_retraining(lapo_notebook):
  nb, _ = lapo_notebook
  rerun = [line for o in nb.cells[-1].outputs if o.output_type == "stream" for line in o.text.splitlines()
           if line.startswith("rerun: ")]
  # the same results, and nothing was trained again
  assert [json.loads(line[len("rerun: "):]) for line in rerun] == [{"same_probe_accuracy": True,
                                                                     "metrics_unchanged": True}]


def test_aime_notebook_then_the_launcher_resumes_its_table(tmp_path):
  """Every stage on pendulum MDP + LPOMDP: SAC expert, datasets, phase 1, phase 2 (+ ablations), BCO(0), BC."""
  nb, seconds = execute("aime", str(tmp_path))
  print(f"aime.ipynb executed in {seconds:.0f} s")
  check_executed(nb, str(tmp_path))
  results = json.load(open(tmp_path / "results.json"))
  for setting in ("mdp", "lpomdp"):
    table = results["table"][setting]
    assert set(table["aime"]) == {"mix"}
    assert set(table["ablations"]) == {"idm"}
    assert np.isfinite(table["bc"]["swingup"])
  assert os.path.exists(tmp_path / "results.md") and os.path.exists(tmp_path / "table_mdp.png")
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert any(r["stage"] == "mdp/mix/aime_swingup" and "action_mse" in r for r in rows)
  assert any(r["stage"] == "expert/swingup" and "episode_return" in r for r in rows)
  # The launcher on the notebook's finished workdir resumes everything from checkpoints and cached results.
  again = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "aime.py"),
                          f"--config={os.path.join(ROOT, 'configs', 'aime.py')}:smoke", f"--workdir={tmp_path}"],
                         capture_output=True, text=True, cwd=ROOT, timeout=900,
                         env={**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "egl"})
  assert again.returncode == 0, again.stderr[-3000:]
  assert json.load(open(tmp_path / "results.json"))["table"] == results["table"]


def test_rlv_notebook_runs_every_acrobot_group(tmp_path):
  nb, seconds = execute("rlv", str(tmp_path))
  print(f"rlv.ipynb executed in {seconds:.0f} s")
  check_executed(nb, str(tmp_path))
  ablations = [f"ablation/{a}/medium" for a in ("actions_true", "rewards_zeros")]   # the smoke preset's
  variants = ("rlv", "rlv_no_adversarial")
  shift = ["shift/rnd"] + [f"shift/{v}/{s}" for v in variants for s in ("weak", "strong")]
  first = check_rlv_results(str(tmp_path), ["sac", "rlv/low", "rlv/medium", "rlv/high", "bco/low", "bco/medium",
                                            "bco/high", "shift/sac", *ablations, *shift])
  for png in ("ablations", "shift_weak", "shift_strong"):
    assert os.path.getsize(tmp_path / f"{png}.png") > 0
  # The launcher on the notebook's finished workdir, its main group only: it resumes (nothing is trained or
  # collected again) and reports the same curves and pools.
  out = launch_rlv(tmp_path, "--config.groups=('main',)")
  assert out.returncode == 0, out.stderr[-3000:]
  again = check_rlv_results(str(tmp_path), ["sac", "rlv/low", "rlv/medium", "rlv/high"])
  assert again["pools"] == first["pools"]
  assert all(again["curves"][k] == first["curves"][k] for k in again["curves"])
