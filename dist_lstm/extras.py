"""Optional features and the pip extras that install them (pyproject.toml).

DeepSpeed, Hydra's Optuna sweeper and its submitit launcher are large and most runs use
none of them, so they are extras rather than dependencies. Asking for one that is not
installed stops at start-up with the `pip install` that fixes it, instead of an
ImportError deep in a run or Hydra's "Could not find 'hydra/sweeper/optuna'".
"""

from __future__ import annotations

import importlib.util
from typing import Dict, Iterable, Optional

from dist_lstm.errors import ConfigError

# extra -> (the module a feature imports, the package that provides it)
EXTRAS = {
    "deepspeed": ("deepspeed", "deepspeed"),
    "optuna": ("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
}

# Command-line group choices Hydra can only compose with a plugin installed -> its extra.
PLUGIN_CHOICES = {
    ("hparams_search", "optuna"): "optuna",
    ("hydra/sweeper", "optuna"): "optuna",
    ("hydra/launcher", "slurm"): "slurm",
    ("hydra/launcher", "submitit_local"): "slurm",
    ("hydra/launcher", "submitit_slurm"): "slurm",
}


def installed(module: str) -> bool:
    """Whether `module` can be imported, found without importing it (DeepSpeed is slow)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # its parent package is missing too
        return False


def require(extra: str, feature: str, module: Optional[str] = None) -> None:
    """Stop with the install command when `feature` needs an extra that is missing
    (`module`: the one it imports, when not the extra's main module)."""
    main_module, package = EXTRAS[extra]
    if not installed(module or main_module):
        raise ConfigError(
            f"{feature} needs {module or package}, which is not installed: install the '{extra}' "
            f'extra with pip install -e ".[{extra}]" (from the repository root).'
        )


def command_line_overrides(argv: Iterable[str]) -> Dict[str, str]:
    """The key=value overrides of a train.py command line, keys without Hydra's +/++/~
    prefixes and values unquoted; flags and their arguments are skipped."""
    found = {}
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        found[key.lstrip("+~")] = value.strip().strip("'\"")
    return found


def check_command_line(argv: Iterable[str]) -> None:
    """Refuse a plugin choice (hparams_search=optuna, hydra/launcher=slurm, ...) whose
    plugin is missing: Hydra fails composing it before any of our code runs."""
    for key, value in command_line_overrides(argv).items():
        for choice in value.split(","):  # a sweep over choices names each one
            extra = PLUGIN_CHOICES.get((key, choice.strip()))
            if extra is not None:
                require(extra, f"{key}={choice.strip()}")
