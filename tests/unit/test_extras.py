"""Optional features: a missing extra stops the run with the pip command that installs it."""

import re
import sys

import pytest

from dist_lstm.config.compose import compose_config
from dist_lstm.errors import ConfigError
from dist_lstm.extras import check_command_line, installed
from dist_lstm.strategy import build_strategy
from dist_lstm.topology import from_environment

OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper"
SUBMITIT_LAUNCHER = "hydra_plugins.hydra_submitit_launcher"


def hide(monkeypatch, *modules):
    """Make `modules` unimportable (and unfindable) for the rest of the test."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


@pytest.mark.parametrize(
    "argv,module,fix",
    [
        (["-m", "experiment=smoke", "hparams_search=optuna"], OPTUNA_SWEEPER, ".[optuna]"),
        (["-m", "hydra/sweeper=optuna"], OPTUNA_SWEEPER, ".[optuna]"),
        (["-m", "hydra/launcher=slurm", "hydra.launcher.nodes=2"], SUBMITIT_LAUNCHER, ".[slurm]"),
        (["-m", "+hydra/launcher=submitit_local"], SUBMITIT_LAUNCHER, ".[slurm]"),
        (["-m", "hydra/launcher=basic,submitit_slurm"], SUBMITIT_LAUNCHER, ".[slurm]"),
    ],
)
def test_a_plugin_choice_without_its_plugin_names_the_install(monkeypatch, argv, module, fix):
    hide(monkeypatch, module)
    with pytest.raises(ConfigError, match="needs .* pip install -e " + re.escape(f'"{fix}"')):
        check_command_line(argv)


def test_other_command_lines_pass(monkeypatch):
    check_command_line(["-m", "hparams_search=optuna", "hydra/launcher=slurm"])  # installed
    hide(monkeypatch, OPTUNA_SWEEPER, SUBMITIT_LAUNCHER)
    check_command_line(["--cfg", "job", "experiment=smoke", "hydra.launcher.nodes=2"])
    check_command_line(["--help"])


def test_deepspeed_strategy_without_deepspeed_names_the_install(monkeypatch):
    hide(monkeypatch, "deepspeed")
    cfg = compose_config(["strategy=deepspeed"])
    with pytest.raises(ConfigError, match=r'strategy=deepspeed needs .* "\.\[deepspeed\]"'):
        build_strategy(cfg.strategy, from_environment("cpu", env={}))


def test_a_module_whose_package_is_missing_is_not_installed():
    assert not installed("no_such_package_anywhere.plugin")
    assert installed("dist_lstm.extras")


def test_reading_a_zero_checkpoint_without_deepspeed_names_the_install(monkeypatch, tmp_path):
    from dist_lstm.checkpoint.consolidate import model_weights

    zero = tmp_path / "step_00000002" / "state" / "zero"
    zero.mkdir(parents=True)
    (zero / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"")
    hide(monkeypatch, "deepspeed", "deepspeed.utils", "deepspeed.utils.zero_to_fp32")
    with pytest.raises(ConfigError, match=r'step_00000002 needs deepspeed.*"\.\[deepspeed\]"'):
        model_weights(tmp_path / "step_00000002")
