"""Train a translation model. Examples:

python train.py                      # default: Multi30k de->en
python train.py experiment=smoke     # a 2-minute end-to-end check
python train.py optim.lr=5e-4 data.src_lang=fr
torchrun --nproc_per_node=2 train.py strategy=ddp experiment=smoke
python train.py -m optim.lr=1e-3,5e-4 launcher.nproc_per_node=2   # a sweep of 2-process jobs
"""

import sys
import tempfile
from pathlib import Path
from typing import List

import hydra
from omegaconf import DictConfig

from dist_lstm.config import register_configs
from dist_lstm.config.moved_keys import refuse_moved_keys
from dist_lstm.errors import ConfigError
from dist_lstm.exit_policy import user_errors
from dist_lstm.extras import check_command_line, command_line_overrides
from dist_lstm.jobs.job import run_job
from dist_lstm.topology import drop_local_rank_argument

register_configs()
sys.argv = drop_local_rank_argument(sys.argv)  # the deepspeed launcher appends --local_rank


# Flags with which Hydra prints something and runs no job (so creates no directory).
PRINT_ONLY = {"--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion"}


def check_output_dir(argv: List[str]) -> None:
    """Hydra creates the run (or sweep) directory and fails with a traceback if it cannot;
    refuse an unusable hydra.run.dir / hydra.sweep.dir override first, naming it."""
    if PRINT_ONLY.intersection(argv):
        return
    overrides = command_line_overrides(argv)
    multirun = "-m" in argv or "--multirun" in argv
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    path = overrides.get(key)
    if not path or "${" in path:  # interpolations are Hydra's to resolve
        return
    try:
        existing = Path(path).absolute()
        while not existing.exists():
            existing = existing.parent
        tempfile.TemporaryDirectory(dir=existing).cleanup()  # can a folder be made here?
    except OSError as exc:
        raise ConfigError(
            f"{key}={path} cannot be created ({exc.strerror or exc}): choose a writable {key}."
        ) from None


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return run_job(cfg)  # the objective, for sweepers that optimise (hparams_search=optuna)


if __name__ == "__main__":
    with user_errors():  # what Hydra would fail on with a traceback, said in one line
        check_command_line(sys.argv[1:])  # a sweeper/launcher plugin that is not installed
        refuse_moved_keys(sys.argv[1:])
        check_output_dir(sys.argv[1:])
    main()
