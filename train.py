"""Train a translation model. Examples:

python train.py                      # default: Multi30k de->en
python train.py experiment=smoke     # a 2-minute end-to-end check
python train.py optim.lr=5e-4 data.src_lang=fr
torchrun --nproc_per_node=2 train.py strategy=ddp experiment=smoke
python train.py -m optim.lr=1e-3,5e-4 launcher.nproc_per_node=2   # a sweep of 2-process jobs
"""

import sys

import hydra
from omegaconf import DictConfig

from dist_lstm.config import register_configs
from dist_lstm.extras import check_command_line
from dist_lstm.job import run_job
from dist_lstm.run import user_errors
from dist_lstm.topology import drop_local_rank_argument

register_configs()
sys.argv = drop_local_rank_argument(sys.argv)  # the deepspeed launcher appends --local_rank


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return run_job(cfg)  # the objective, for sweepers that optimise (hparams_search=optuna)


if __name__ == "__main__":
    with user_errors():  # what Hydra would fail on with a traceback, said in one line
        check_command_line(sys.argv[1:])  # a sweeper/launcher plugin that is not installed
    main()
