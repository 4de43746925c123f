"""train.py without the optional extras: the README's plain run works, and a plugin choice
whose extra is missing stops before Hydra with the pip command (the modules are hidden)."""

import os
import subprocess
import sys

from tests.helpers.configs import SHORT_SMOKE_RUN
from tests.helpers.paths import ROOT

EXTRA_MODULES = (
    "deepspeed",
    "optuna",
    "submitit",
    "hydra_plugins.hydra_optuna_sweeper",
    "hydra_plugins.hydra_submitit_launcher",
)
# python -c SHIM HIDDEN ARGS...: train.py as if the comma-separated modules were not installed
SHIM = (
    "import runpy, sys\n"
    "for name in sys.argv[1].split(','):\n"
    "    sys.modules[name] = None\n"
    "sys.argv = ['train.py', *sys.argv[2:]]\n"
    "runpy.run_path('train.py', run_name='__main__')\n"
)


def train_without(hidden, *args):
    return subprocess.run(
        [sys.executable, "-c", SHIM, ",".join(hidden), *args],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_plain_run_needs_no_extra(tmp_path):
    proc = train_without(
        EXTRA_MODULES,
        *SHORT_SMOKE_RUN,
        f"hydra.run.dir={tmp_path}",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "last" / "COMPLETE").is_file()


def test_optuna_search_without_the_sweeper_stops_with_the_install(tmp_path):
    proc = train_without(
        ["hydra_plugins.hydra_optuna_sweeper"],
        "-m",
        "experiment=smoke",
        "hparams_search=optuna",
        f"hydra.sweep.dir={tmp_path}",
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "hparams_search=optuna needs hydra-optuna-sweeper" in output
    assert 'pip install -e ".[optuna]"' in output
    assert "Traceback" not in output
    assert not any(tmp_path.iterdir())  # stopped before any job started
