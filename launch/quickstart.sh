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
t0=$(date +%s)
bash launch/setup.sh
t1=$(date +%s)
bash launch/local.sh --config=configs/fmnist_ltd.py --workdir="$workdir" "$@"
t2=$(date +%s)
echo "[quickstart] results: $workdir/eval.json; $(( t2 - t0 ))s in all ($(( t1 - t0 ))s set-up, $(( t2 - t1 ))s run)"
# The machine reference to scale these times by (README "How long it takes"): PyTorch's step of
# bench/pgd_step.py. PyTorch comes with the test set-up (launch/setup.sh test, README command 2).
if .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python bench/pgd_step.py --reference_only --reps=5 | sed 's/^/[quickstart] /'
else
  echo "[quickstart] machine reference: run 'bash launch/setup.sh test && .venv/bin/python bench/pgd_step.py --reference_only' (needs PyTorch)"
fi
