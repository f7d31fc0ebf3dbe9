#!/usr/bin/env bash
# README command 2: sets up (launch/setup.sh test) and runs the test suite.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash launch/setup.sh test
# The suite starts hundreds of Python processes, and many import modules (of JAX, Orbax, TFDS)
# that the set-up's warm-up does not reach. Python's default is to cache their bytecode on first
# import; a machine that sets PYTHONDONTWRITEBYTECODE would have every process compile them again.
unset PYTHONDONTWRITEBYTECODE
# The formatter and the linter first: zero findings, or CI fails here.
.venv/bin/ruff format --check --quiet .
.venv/bin/ruff check --quiet .
# Two workers: compilation is single-threaded, so two test processes keep both cores busy.
exec .venv/bin/python -m pytest -q -n 2 --durations=15 tests "$@"
