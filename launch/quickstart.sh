#!/usr/bin/env bash
# Usage: launch/quickstart.sh [WORKDIR] [--config.x=y ...]
#
# README command 1: sets everything up (launch/setup.sh) and runs the main job on Fashion-MNIST
# at eps = 0.1: TRADES teacher -> teacher-logit precompute -> LTD student -> evaluation of the
# student on the full test split; ends by printing the results table. Idempotent: finished
# stages are skipped and an interrupted run resumes from its checkpoints.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
workdir="runs/quickstart"
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then workdir="$1"; shift; fi
bash launch/setup.sh
start=$(date +%s)
bash launch/local.sh --config=configs/fmnist_ltd.py --workdir="$workdir" "$@"
echo "[quickstart] results: $workdir/eval.json ($(( $(date +%s) - start ))s after set-up)"
