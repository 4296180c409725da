#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine: apt runtime libraries, a virtual environment in .venv, the package.
#   bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# System libraries: Qt5 runtime for envpool's Procgen, EGL + Mesa for rendering DeepMind Control on the CPU.
apt_pkgs=(libqt5gui5 libegl1 libegl-mesa0 libgl1-mesa-dri)
missing=()
for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

# Python environment, reinstalled only when pyproject.toml changes.
[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  # Packages whose pins conflict with ours, installed without their dependencies: pyproject's [tool.vidrl_jax].
  mapfile -t no_deps < <(.venv/bin/python -c \
    'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["tool"]["vidrl_jax"]["no_deps"]))')
  .venv/bin/python -m pip install -q --no-deps "${no_deps[@]}"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
