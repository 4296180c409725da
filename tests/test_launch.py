"""What a newcomer meets first in every `experiments/<method>.py`: `--help` and a workdir that cannot be written.
(Each method's config-key, preset and data errors are tested beside its pipeline: tests/test_lapo.py,
tests/test_aime.py, tests/test_rlv_pipeline.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from vidrl_jax import launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ("lapo", "aime", "rlv")


def _launch(method: str, *args: str, cwd: str = ROOT) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", f"{method}.py"), *args],
                        capture_output=True, text=True, cwd=cwd, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.mark.parametrize("method", METHODS)
def test_help_lists_config_with_its_presets_and_workdir(method, tmp_path):
  out = _launch(method, "--help", cwd=str(tmp_path))   # from another directory: the default config still resolves
  assert out.returncode == 0, out.stderr[-2000:]
  text = " ".join(out.stdout.split())   # absl wraps the help at 80 columns
  assert f"python experiments/{method}.py --config configs/{method}.py:cpu --workdir" in text   # the usage
  presets = re.search(r"--config: .*?\(presets: ([^;]+); default cpu\)", text)
  assert presets and {"smoke", "cpu", "paper"} <= set(presets.group(1).split(", ")), text
  assert "--workdir: " in text and "resumes" in text
  assert "--[no]distributed" in text and "--coordinator_address" in text


def test_a_workdir_that_cannot_be_written_is_one_sentence(tmp_path):
  a_file = tmp_path / "a_file"
  a_file.write_text("not a directory")
  for workdir, reason in ((str(a_file / "run"), "Not a directory"), (str(a_file), "File exists")):
    out = _launch("rlv", "--config", "configs/rlv.py:smoke", f"--workdir={workdir}")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        f"error: cannot write the workdir {workdir!r} ({reason}: {workdir}); pass a --workdir in a directory you "
        f"can write to"], out.stderr[-3000:]
  assert a_file.read_text() == "not a directory"   # nothing of the user's was touched
  out = _launch("rlv", "--config", "configs/rlv.py:smoke")
  assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith("error: --workdir is required")


def test_a_workdir_without_permission_is_one_sentence(tmp_path, monkeypatch):
  """No permission (root ignores file modes, so the OSError is raised by hand): the same one sentence."""
  def denied(path):
    raise PermissionError(13, "Permission denied", path)
  monkeypatch.setattr(launch.io, "makedirs", denied)
  from ml_collections import ConfigDict
  with pytest.raises(SystemExit) as e:
    launch.main(lambda config, workdir: {}, ConfigDict({"seed": 0}), str(tmp_path / "x"))
  assert str(e.value) == (f"error: cannot write the workdir {str(tmp_path / 'x')!r} (Permission denied: "
                          f"{tmp_path / 'x'}); pass a --workdir in a directory you can write to")
