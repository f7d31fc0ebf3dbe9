#!/usr/bin/env bash
# Usage: launch/setup.sh [EXTRAS]     e.g. launch/setup.sh test
#
# Idempotent set-up on a fresh Debian machine with Python 3.11: installs the Fashion-MNIST
# Debian package (apt-get, as root or with sudo) if its files are missing, creates .venv and
# installs this package (with the given pip extras) into it. Safe to rerun.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
extras="${1:-}"
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "[setup] installing the Debian package dataset-fashion-mnist"
  sudo_cmd=""
  [ "$(id -u)" != 0 ] && sudo_cmd="sudo"
  if ! ($sudo_cmd apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1); then
    $sudo_cmd apt-get update -qq >/dev/null 2>&1 || true
    $sudo_cmd apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
      echo "[setup] WARNING: could not install dataset-fashion-mnist; the run will try to download Fashion-MNIST"
  fi
fi
py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($py --version)"
  "$py" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)-${extras}"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing robust_distill${extras:+[$extras]} into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  # No byte-compiling by pip (all 14k files, one by one: 20 s). Instead, importing what a run
  # imports writes the bytecode of those files only (about 2,000), so that no later process
  # compiles them again, even where PYTHONDONTWRITEBYTECODE is set (it is lifted for this).
  .venv/bin/python -m pip install -q --no-compile -e ".${extras:+[$extras]}"
  mods="robust_distill"
  [[ ",$extras," == *",test,"* ]] && mods="$mods torch ipykernel.kernelapp nbclient xdist"
  for m in $mods; do  # in parallel: one process per module
    env -u PYTHONDONTWRITEBYTECODE .venv/bin/python launch/warm_bytecode.py "$m" &
  done
  wait
  touch "$stamp"
fi
