#!/usr/bin/env bash
# Usage: launch/local.sh [--dry-run] --config=configs/FILE.py[:ARG] --workdir=DIR [--config.x=y ...]
#
# Runs robust_distill on this host with all of its devices: GPUs/TPUs if present, otherwise the
# CPU split into --host_devices=N virtual devices (measured default 2; see
# robust_distill/cpu_devices.py). Uses .venv/bin/python if the repository has one.
# --dry-run prints the command instead of running it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
[ -x "$here/.venv/bin/python" ] && py="$here/.venv/bin/python"
dry=0
args=()
for a in "$@"; do
  if [ "$a" = "--dry-run" ]; then dry=1; else args+=("$a"); fi
done
cmd=("$py" -m robust_distill.main "${args[@]}")
if [ "$dry" = 1 ]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
cd "$here"
exec "${cmd[@]}"
