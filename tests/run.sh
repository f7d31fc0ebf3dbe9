#!/usr/bin/env bash
# README command 2: sets up (launch/setup.sh test) and runs the test suite.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash launch/setup.sh test
exec .venv/bin/python -m pytest -q tests "$@"
