#!/usr/bin/env bash
# Wheels for the GPU machine, which has no network (run here, where pip reaches an index):
#   bash benchmarks/gpu_wheels.sh        # -> benchmarks/wheels/ (ignored by git)
# Every package the project and its deepspeed extra need that the GPU machine's Python
# 3.12 lacks, at the versions installed here, for CPython 3.12 on manylinux x86-64 (pure
# where possible; deepspeed and antlr4-python3-runtime built with `pip wheel --no-deps`),
# plus the project's own wheel. benchmarks/gpu_check.sh installs them with
# `pip install --no-index --no-deps`. See benchmarks/gpu_wheels.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
exec "$PYTHON" benchmarks/gpu_wheels.py "$@"
