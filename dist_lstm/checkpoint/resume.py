"""Which checkpoint `resume=...` means, and whether this run can continue from it.

Checked before any state is loaded, so a mismatch ends with one message naming the
difference, not with a shape error from deep inside DCP or DeepSpeed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Protocol, Tuple

from dist_lstm.checkpoint.consolidate import is_checkpoint_folder
from dist_lstm.checkpoint.manager import (
    STATE,
    CheckpointManager,
    completed_checkpoints,
    is_complete,
    read_meta,
)
from dist_lstm.data.shaping import RESUME_KEYS, option_values
from dist_lstm.errors import UserError
from dist_lstm.strategy.formats import DEEPSPEED_TAG

# What a checkpoint saved before a data key existed was trained with: no extra corpora,
# and the whole target vocabulary (keys missing from this table read as None).
DATA_BEFORE_ITS_KEYS = {"corpora": [], "tokenizer": {"prune_target_vocab": False}}


class ResumableStrategy(Protocol):
    """What resuming asks of the strategy (dist_lstm/strategy/base.py)."""

    state_format: str  # "dcp" or "deepspeed": what its save_state writes

    def prepare_resume(self, folder: Path, saved_world_size: int) -> None: ...


def find_resume(
    resume: Optional[str],
    checkpoints: CheckpointManager,
    config: Dict[str, Any],
    strategy: ResumableStrategy,
) -> Tuple[Optional[Path], Dict[str, Any]]:
    """The checkpoint to continue from (None: fresh) and its meta, checked before any data
    or model is built so a bad request fails at once."""
    folder = resume_folder(resume, checkpoints)
    if folder is None:
        latest = checkpoints.latest()
        if latest is not None:
            raise UserError(
                f"{checkpoints.directory.parent} already holds checkpoints of another run "
                f"({latest.name}). Continue it with resume=auto, or start in a new directory "
                "(hydra.run.dir=...)."
            )
        return None, {}
    meta = check_resumable(folder, config, strategy.state_format)
    strategy.prepare_resume(folder / STATE, meta["world_size"])
    return folder, meta


def resume_folder(resume: Optional[str], manager: CheckpointManager) -> Optional[Path]:
    """None (start fresh) or the complete checkpoint folder to continue from.

    resume=auto: the newest complete checkpoint of this run directory, if any.
    resume=PATH: a checkpoint folder, or a run directory (its newest checkpoint).
    """
    if resume is None:
        return None
    if resume == "auto":
        return manager.latest()
    path = Path(resume).expanduser()
    if is_checkpoint_folder(path):
        if not is_complete(path):
            raise UserError(
                f"resume={resume}: that checkpoint's save was interrupted (no COMPLETE "
                "marker); resume from an earlier one or use resume=auto."
            )
        return path
    found = completed_checkpoints(path)
    if found:
        return found[-1]
    raise UserError(
        f"resume={resume}: not a checkpoint folder nor a run directory with checkpoints. "
        "Give RUN_DIR/checkpoints/step_XXXXXXXX, a run directory, or resume=auto."
    )


def check_resumable(folder: Path, config: Dict[str, Any], state_format: str) -> Dict[str, Any]:
    """The checkpoint's meta, after checking that this run's model and strategy fit it."""
    meta = read_meta(folder)
    saved = meta.get("config", {})
    saved_model = saved.get("model", {})  # read_meta filled in keys added since the save
    if saved_model != config["model"]:
        changed = sorted(
            key
            for key in set(saved_model) | set(config["model"])
            if saved_model.get(key) != config["model"].get(key)
        )
        raise UserError(
            f"resume: {folder} holds another model (model.{', model.'.join(changed)} "
            "differ). Resume with the checkpoint's model settings, or start a new run."
        )
    check_same_data(folder, saved.get("data", {}), config["data"])
    if saved.get("seed") != config["seed"]:
        raise UserError(
            f"resume: {folder} was trained with seed={saved.get('seed')}; this run has "
            f"seed={config['seed']}. Use the same seed, or the data order would change."
        )
    deepspeed_state = (folder / STATE / DEEPSPEED_TAG).is_dir()
    if deepspeed_state != (state_format == "deepspeed"):
        written = "strategy=deepspeed" if deepspeed_state else "strategy=single/ddp"
        raise UserError(
            f"resume: {folder} was written with {written}; resume with the same kind of "
            "strategy (single and ddp checkpoints are interchangeable), or export the "
            "weights with `dist-lstm export` and start a new run from them."
        )
    return meta


def check_same_data(folder: Path, saved_data: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    """Refuse a resume that changes a data option the batches depend on (RESUME_KEYS of
    data/shaping.py): the saved position in the epoch only means something for the same
    batches. `saved_data`: the checkpoint's resolved data config; `data`: this run's."""
    saved = option_values(with_keys_added_since(saved_data), RESUME_KEYS)
    wanted = option_values(data, RESUME_KEYS)
    saved_corpora, corpora = len(saved_data.get("corpora") or []), len(data["corpora"])
    if saved_corpora != corpora:
        raise UserError(
            f"resume: {folder} was trained with {saved_corpora} data.corpora; this run has "
            f"{corpora}. The saved position in the epoch only means something for the same "
            "batches: resume with the checkpoint's data.corpora, or start a new run."
        )
    for key, value in wanted.items():
        if saved.get(key) != value:
            old = as_override(saved.get(key))
            raise UserError(
                f"resume: {folder} was trained with {key}={old}; this run has "
                f"{key}={as_override(value)}. The saved position in the epoch only means "
                f"something for the same batches: resume with {key}={old}, or start a new run."
            )


def with_keys_added_since(saved_data: Mapping[str, Any]) -> Dict[str, Any]:
    """The saved data config with the data keys added since it was written, at the values
    such a checkpoint was trained with (DATA_BEFORE_ITS_KEYS)."""
    tokenizer = {**DATA_BEFORE_ITS_KEYS["tokenizer"], **saved_data.get("tokenizer", {})}
    return {**DATA_BEFORE_ITS_KEYS, **saved_data, "tokenizer": tokenizer}


def as_override(value: Any) -> str:
    """`value` as a command-line override spells it (null, true, false)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
