"""Every script in benchmarks/ run on its smallest setting, so that none can rot; and the official-code comparison
(`--official`) printed only from a results file of the same sitting, never from a constant.

Each script runs in a subprocess of this interpreter from the repository root (JAX on the CPU, MuJoCo under EGL),
with tiny shapes and one or two timed steps; the test checks the exit code and the rows the script is meant to
print, not their numbers. The scripts themselves do not enable XLA's persistent compilation cache (their
compile-time columns time real compilation); the subprocesses here get the suite's cache (conftest.py,
`vidrl_jax.launch.enable_compilation_cache`) through JAX's own environment variables, so a warm cache makes these
runs fast (their printed compile times then mean nothing, and nothing here reads them). Programs with host
callbacks (envpool Procgen's reset) are never cached: `ppo_iteration.py` compiles its PPO step every time.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import subprocess
import sys

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
TIMEOUT_S = 600          # per script; a warm cache needs a small fraction of it

NUM = r"-?[\d,]+(\.\d+)?"     # a printed number

# script -> (its smallest setting, regexes its output must match (re.M): the rows it is meant to print)
SMOKE: dict[str, tuple[list[str], list[str]]] = {
    "apv_steps.py": (   # the stacked model at the smoke preset's shapes
        ["--preset=smoke", "--kinds=stacked", "--calls=1"],
        [rf"^stacked +update +2x8 +16 +{NUM} +{NUM} +{NUM} +{NUM}$",
         rf"^stacked +world_model \(update - actor_critic\) +2x8 +16 +{NUM} +nan +{NUM} +{NUM}$",
         rf"^stacked +actor_critic +2x8 +16 +{NUM} +{NUM} +{NUM} +{NUM}$"]),
    "aime_steps.py": (   # MLP cases only: the Visual model's step is compiled by tests/test_aime.py's smoke run
        ["--cases=p1_mdp,p2_cpu", "--batch=2", "--length=3", "--deter=8", "--stoch=4", "--hidden=8", "--steps=1",
         "--warmup=0"],
        [r"^\| case \| shapes \| median ms/step \| compile s \| XLA buffers GiB \| peak RSS GiB \| GFLOP/step \| "
         r"GFLOP/s \|",
         rf"^\| p1_mdp \| 2x3, 8/4, 8 \| {NUM} \|",
         rf"^\| p2_cpu/mdp \| 2x3, 8/4, 8 \| {NUM} \|",
         rf"^\| p2_cpu/lpomdp \| 2x3, 8/4, 8 \| {NUM} \|"]),
    "lapo_steps.py": (   # the CPU's default impl; both impls' equality is tests/nets/test_conv_lapo.py's
        ["--shapes=tiny", "--steps=1", "--warmup=0", "--impls=matmul"],
        [rf"^\| tiny \(batch 4\) \| {stage} \| matmul \| {NUM} \|" for stage in ("stage1", "stage2")]),
    "conv_ops.py": (
        ["--batch=2", "--width=4", "--feat=8", "--runs=1", "--warmup=0"],
        [rf"^\| {net} \| {p} \| {impl} \| {NUM} \|" for net in ("encoder", "decoder") for p in ("fwd\\+bwd", "fwd")
         for impl in ("xla", "matmul")] + [rf"^\| encoder \| fwd\+bwd \| matmul \|.*\| {NUM}x \|$"]),
    "env_rollout.py": (
        ["--num_envs=1", "--steps=2", "--repeats=1"],
        [rf"^\| \({row}\) .* \| 1 \| {NUM} \| {NUM} – {NUM} \|$" for row in ("a", "b", "b0", "c")]),
    "fused_seeds.py": (
        ["--runs=2", "--hidden=8", "--steps=100", "--methods=rlv", "--repeats=1", "--host_train_every=50"],
        [rf"^\| rlv \| 8 \| {NUM} \| {NUM} \| {NUM}x \| {NUM} / {NUM} \|$",
         rf"^host loop \(offpolicy.sac_task\), SAC, hidden 8, train_every 50: {NUM} ms/update$"]),
    "ppo_iteration.py": (
        ["--multipliers=0.25", "--impls=xla", "--num_envs=1", "--num_steps=2", "--minibatches=1", "--iterations=1"],
        [rf"^\| x0.25 \| xla \| {NUM} \| {NUM} \| {NUM} \|"]),
    "ppo_minatar.py": (
        ["--games=Breakout-MinAtar", "--num_envs=2", "--num_steps=8", "--total_env_steps=32", "--marks=32",
         "--window=32", "--curve_every=16"],
        [rf"^\| Breakout-MinAtar \| {NUM} \| {NUM} \| {NUM} \| 32 \| {NUM} \|$", rf"^\| 32 \| {NUM} \|$"]),
    "render_speed.py": (
        ["--tasks=walker-walk", "--size=16", "--frames=2"],
        [rf"^walker-walk +render +{NUM} +{NUM} +{NUM} +{NUM}x$",
         rf"^walker-walk +step\+render +{NUM} +nan +{NUM} +{NUM}x$"]),
    "rlv_env_speed.py": (
        ["--steps=2", "--scan=2", "--repeats=1"],
        [rf"^metaworld push-v3 {case} +{NUM} steps/s$" for case in ("state", "48x48 image", "48x48 strong domain")]
        + [rf"^gymnax Acrobot num_envs={n} +{NUM} steps/s +\(compile {NUM} s\)$" for n in (1, 16)]),
    "rlv_steps.py": (   # the state case: the image update is compiled by tests/test_rlv.py
        ["--cases=acrobot", "--calls=1", "--burst=1", "--batch=2"],
        [r"^acrobot/sac +" + r" +".join([NUM] * 5) + " *$", r"^acrobot/rlv +" + r" +".join([NUM] * 6) + "$"]),
}

# Scripts that render with MuJoCo (a machine without EGL skips them, as tests/test_aime.py does) and their optional
# packages (metaworld is an optional extra: pyproject.toml).
RENDERS = {"render_speed.py", "rlv_env_speed.py"}
NEEDS = {"rlv_env_speed.py": "metaworld"}

FAKE_OFFICIAL = (   # as run_all.sh writes it: common.report's line per case, then the peak-RSS line of time -v
    {"case": "matmul_fp32_2048", "median_ms": 60.0},
    {"case_run": "matmul_before", "peak_rss_kB_time_v": 123},
    {"case": "aime_p2_mdp", "torch": "2.13.0", "threads": 2, "n_timed": 3, "median_ms": 1234.0},
    {"case_run": "aime_p2_mdp", "peak_rss_kB_time_v": 456},
    {"case": "aime_p2_mdp", "median_ms": 1500.0})   # timed twice: the last line counts


def _env() -> dict[str, str]:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "MUJOCO_GL": "egl"}
  cache = jax.config.jax_compilation_cache_dir      # the suite's cache (conftest.py), '' or None: off
  if cache:
    env.update(JAX_COMPILATION_CACHE_DIR=cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=str(jax.config.jax_persistent_cache_min_compile_time_secs),
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=str(jax.config.jax_persistent_cache_min_entry_size_bytes))
  return env


def _run(script: str, args: list[str]) -> str:
  if script in NEEDS and importlib.util.find_spec(NEEDS[script]) is None:
    pytest.skip(f"{script} needs {NEEDS[script]}, an optional package not installed here")
  out = subprocess.run([sys.executable, os.path.join(BENCHMARKS, script), *args], capture_output=True, text=True,
                       cwd=ROOT, env=_env(), timeout=TIMEOUT_S)
  if out.returncode != 0 and script in RENDERS and "EGL" in out.stderr:
    pytest.skip(f"no EGL rendering on this machine ({script} renders with MuJoCo)")
  assert out.returncode == 0, f"{script} {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr[-6000:]}"
  return out.stdout


def _fake_dreamerv3(tmp_path) -> str:
  """An executable standing in for DreamerV3's interpreter: it checks the sizes apv_steps.py passes for the smoke
  preset and prints a row as benchmarks/_dreamerv3.py does."""
  fake = tmp_path / "python"
  expected = ["--deter=32", "--hidden=32", "--stoch=4", "--classes=4", "--depth=4", "--kernel=4", "--units=32",
              "--layers=2", "--batch=2", "--length=8", "--image=16", "--horizon=3", "--mults=1,2"]
  fake.write_text(f"""#!{sys.executable}
import json, sys
missing = [a for a in {expected!r} if a not in sys.argv]
assert sys.argv[1].endswith("_dreamerv3.py") and not missing, (missing, sys.argv)
print(json.dumps(dict(case="dreamerv3_train", median_ms=250.0, compile_s=1.5, gflop=2.0, jax="fake")))
""")
  fake.chmod(0o755)
  return str(fake)


def _official_module():
  spec = importlib.util.spec_from_file_location("_official", os.path.join(BENCHMARKS, "_official.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _scripts() -> list[str]:
  """benchmarks/*.py that are scripts (a leading underscore marks a module they share)."""
  return sorted(os.path.basename(p) for p in glob.glob(os.path.join(BENCHMARKS, "*.py"))
                if not os.path.basename(p).startswith("_"))


def test_every_script_has_a_smoke_setting():
  """A new script in benchmarks/ cannot be added without its smallest setting here."""
  assert sorted(SMOKE) == _scripts()


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_runs_on_smallest_setting(script, tmp_path):
  args, rows = SMOKE[script]
  if script == "apv_steps.py":   # the DreamerV3 column through a stand-in of its environment's interpreter
    stdout = _run(script, [*args, f"--dreamerv3={tmp_path}", f"--dreamerv3_python={_fake_dreamerv3(tmp_path)}"])
    # the smoke preset's sizes reach the reference (RSSM 32 wide, 4 x 4 latents, CNN 4 deep in 2 layers, 2 x 8)
    assert re.search(r"^DV3 +official train step \(jax fake\) +2x8 +16 +250\.0 +1\.5 +2\.000 +8\.00$", stdout,
                     re.M), stdout
    assert re.search(r"^DreamerV3 / ours \(stacked update\), medians over 1 round\(s\): 250\.0 / "
                     rf"{NUM} ms = {NUM}x \(> 1: ours faster\)$", stdout, re.M), stdout
  elif script != "aime_steps.py":
    stdout = _run(script, args)
    # Without a results file of the same sitting, no official number (nor its column) is printed.
    assert "official" not in stdout.lower(), stdout
  else:   # with a results file: its columns, and no ratio at overridden shapes (the official times are at its own)
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join(json.dumps(r) for r in FAKE_OFFICIAL) + "\n")
    stdout = _run(script, [*args, f"--official={results}"])
    assert re.search(rf"^official: {re.escape(str(results))} \(written .*; cases matmul_fp32_2048, p2_mdp\)$",
                     stdout, re.M), stdout
    assert re.search(r"\| official ms \| official / ours \|$", stdout, re.M), stdout
    assert re.search(r"^\| p1_mdp \|.* \| - \(shapes overridden\) \| - \|$", stdout, re.M), stdout
    assert re.search(r"^\| p2_cpu/mdp \|.* \| - \(no official case\) \| - \|$", stdout, re.M), stdout
  for row in rows:
    assert re.search(row, stdout, re.M), f"{script}: no line matches {row!r} in:\n{stdout}"


def test_official_columns_come_from_the_results_file(tmp_path):
  official = _official_module()
  results = tmp_path / "results.jsonl"
  results.write_text("\n".join(json.dumps(r) for r in FAKE_OFFICIAL) + "\n\n")
  table = official.read(str(results), "aime_")
  assert table == {"matmul_fp32_2048": 60.0, "p2_mdp": 1500.0}
  assert official.cells(table["p2_mdp"], 600.0, "unused") == " 1,500 | 2.50x |"
  assert official.cells(None, 600.0, "shapes overridden") == " - (shapes overridden) | - |"
  assert official.header(str(results), table).startswith(f"official: {results} (written ")
