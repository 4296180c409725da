"""Config helpers shared by every `configs/<method>.py`.

A config file defines `get_config(arg)`; the arg picks a preset (`smoke`, `cpu`, `paper`). Configs are locked
before they are returned, so a mistyped key (in code or as `--config.key=value`) is an error, not a silent no-op.
"""

from __future__ import annotations

import os
from typing import Callable

import ml_collections

from vidrl_jax.errors import VidrlError

PRESETS = ("smoke", "cpu", "paper")   # every method has these three; a method may add more


def preset_name(arg: str | None, choices=PRESETS, default: str = "cpu", config_file: str = "") -> str:
  """The preset chosen by `configs/x.py:arg`; one clear error, naming `config_file`, for an unknown name."""
  name = (arg or default).strip()
  if name not in choices:
    example = f"configs/{os.path.basename(config_file)}" if config_file else "configs/<method>.py"
    raise VidrlError(f"unknown config preset {name!r}; choose one of {', '.join(choices)} "
                     f"(e.g. --config {example}:{default})")
  return name


def build(base: Callable[[], ml_collections.ConfigDict], presets: dict[str, dict],
          arg: str | None, config_file: str = "") -> ml_collections.ConfigDict:
  """`base()` updated with the chosen preset's overrides (dotted keys allowed), then locked. `config_file` (the
  config's `__file__`) names the file in the unknown-preset error."""
  missing = set(PRESETS) - set(presets)
  if missing:
    raise VidrlError(f"the config defines no {sorted(missing)} preset(s); every method needs smoke, cpu, paper")
  name = preset_name(arg, tuple(presets), config_file=config_file)
  config = base()
  config.preset = name
  for key, value in presets.get(name, {}).items():
    set_path(config, key, value)
  config.lock()
  return config


def set_path(config: ml_collections.ConfigDict, dotted: str, value) -> None:
  """`config.a.b = value` for `dotted='a.b'`; an unknown key raises VidrlError."""
  *parents, leaf = dotted.split(".")
  node = config
  for i, part in enumerate(parents):
    if part not in node:
      raise VidrlError(f"config has no key {'.'.join(parents[:i + 1])!r}; check the spelling in the preset")
    node = node[part]
  if leaf not in node:
    raise VidrlError(f"config has no key {dotted!r}; check the spelling in the preset")
  node[leaf] = value


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict) -> ml_collections.ConfigDict:
  """A copy of `config` with {dotted key: value} set (an unknown key raises VidrlError), e.g. a method's variant;
  the copy is locked like the original."""
  out = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    set_path(out, key, value)
  out.lock()
  return out


def flatten(tree: dict, prefix: str = "") -> dict:
  """{'a.b': value} of a nested dict (a config's `to_dict()` or its config.json)."""
  out = {}
  for k, v in tree.items():
    out.update(flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
  return out


def differing_keys(a: dict, b: dict, ignore: tuple[str, ...] = ()) -> list[str]:
  """The dotted keys in which two configs (nested dicts) differ, leaving out `ignore` and the keys under it."""
  fa, fb = flatten(a), flatten(b)
  skip = lambda k: any(k == i or k.startswith(i + ".") for i in ignore)
  return sorted(k for k in set(fa) | set(fb) if not skip(k) and fa.get(k) != fb.get(k))
