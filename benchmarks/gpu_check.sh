#!/usr/bin/env bash
# The one command for a machine with a GPU (about 6 minutes, no network needed):
#   bash benchmarks/gpu_check.sh              # every check; benchmarks/results/gpu_check.json
#   bash benchmarks/gpu_check.sh --dry-run    # the plan and its time budget, runs nothing
# It installs benchmarks/wheels (benchmarks/gpu_wheels.sh makes them) with
# `pip install --no-index --no-deps`, tries every import the checks need, then runs the
# plan within an overall budget. Where `nvidia-smi -L` or /dev/nvidia* shows a GPU it exits
# 0 only if every check ran and passed; without any sign of a GPU it says so and exits 0.
# The logic (and its tests) live in benchmarks/gpu_check.py, which needs only Python.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
exec "$PYTHON" benchmarks/gpu_check.py "$@"
