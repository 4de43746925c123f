"""The checkpoint folder of a run: layout, atomic commit, latest/best, retention, and
both directions: `save` writes and `load` restores every registered part of the state.

    <run_dir>/checkpoints/
        step_00000500/            one checkpoint per save
            state/                model + optimizer, written by the strategy (sharded:
                                  DCP files or DeepSpeed's ZeRO partitions)
            trainer.pt            the shared parts, by name: trainer counters, sampler
                                  position, LR schedule, best metric, loss scaler
            rank/rank_00000.pt    each rank's own parts, by name: RNG states, loss window
            meta.pt               run metadata: resolved config, tokenizer, W&B run id,
                                  metrics, world size, versions (what inference reads)
            COMPLETE              written last: only marked folders are ever loaded
        best -> step_00000500     symlinks, replaced atomically
        last -> step_00000750

Why: a job killed mid-save (preemption, a crash, a full disk) must never leave something
that looks like a checkpoint. Every rank writes into a scratch folder, rank 0 renames it
into place and only then writes the marker; unmarked folders are removed at start-up.
All ranks are assumed to see the same filesystem (as torchrun and SLURM jobs usually do).

New state is one `register(name, part)`: anything with state_dict/load_state_dict.
"""

from __future__ import annotations

import logging
import os
import shutil
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Protocol, Tuple

import torch

from dist_lstm.atomic import atomic_write
from dist_lstm.errors import UserError

log = logging.getLogger(__name__)

FORMAT_VERSION = 3
STEP_PREFIX = "step_"
SCRATCH_PREFIX = ".incomplete_"
COMPLETE = "COMPLETE"
META = "meta.pt"
SHARED = "trainer.pt"
STATE = "state"
RANK_DIR = "rank"
# Model keys added after checkpoints were first written, with the value that older
# checkpoints (whose saved config lacks the key) were trained with; loading fills them in.
ADDED_MODEL_KEYS = {"word_dropout": 0.0}


class Stateful(Protocol):
    """A part of the training state (trainer counters, sampler, schedule, ...)."""

    def state_dict(self) -> Dict[str, Any]: ...

    def load_state_dict(self, state: Dict[str, Any]) -> None: ...


class RankStateful(Stateful, Protocol):
    """A part each rank holds on its own (RNG, loss window). A checkpoint written by fewer
    ranks has nothing for the others: they `start_fresh` at the checkpoint's step."""

    def start_fresh(self, step: int) -> None: ...


class ModelState(Protocol):
    """Who writes the model and optimizer tensors, and how: the strategy (DCP or
    DeepSpeed). Collective: every rank calls both."""

    def save_state(self, folder: Path, asynchronous: bool = False) -> Optional[Future]: ...

    def load_state(self, folder: Path) -> None: ...


def step_name(step: int) -> str:
    return f"{STEP_PREFIX}{step:08d}"


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE).is_file()


def rank_file(folder: Path, rank: int) -> Path:
    return folder / RANK_DIR / f"rank_{rank:05d}.pt"


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def completed_checkpoints(run_dir: str | Path) -> List[Path]:
    """The complete step checkpoints of a run directory, oldest first. Only reads: what
    resuming, averaging and benchmarks need, without a manager (which clears unfinished
    saves at start)."""
    directory = checkpoints_dir(run_dir)
    if not directory.is_dir():
        return []
    found = [p for p in directory.glob(f"{STEP_PREFIX}*") if p.is_dir()]
    return sorted(p for p in found if is_complete(p))


class CheckpointManager:
    """Saves, finds and loads the checkpoints of one run; every rank holds one.

    `save` and `load` are collective: every rank calls them with the same step or folder;
    rank 0 commits. `barrier`, `is_main` and `rank` come from the strategy's topology.
    """

    def __init__(
        self,
        run_dir: str | Path,
        keep_last: int,
        is_main: bool = True,
        barrier: Callable[[], None] = lambda: None,
        rank: int = 0,
        asynchronous: bool = False,
    ):
        self.directory = checkpoints_dir(run_dir)
        self.keep_last = keep_last
        self.is_main = is_main
        self.barrier = barrier
        self.rank = rank
        self.asynchronous = asynchronous
        self.run_metadata: Dict[str, Any] = {}  # config, tokenizer, W&B id: see metadata.py
        self._model_state: Optional[ModelState] = None
        self._shared: Dict[str, Stateful] = {}
        self._per_rank: Dict[str, RankStateful] = {}
        self._in_flight: Optional[Tuple[Future, Path, Path, int, bool]] = None
        if is_main:
            self.remove_incomplete()
        barrier()

    # ------------------------------------------------------------ registration
    def register(self, name: str, part: Stateful) -> None:
        """A part identical on every rank, written once by rank 0."""
        self._check_new(name)
        self._shared[name] = part

    def register_per_rank(self, name: str, part: RankStateful) -> None:
        """A part each rank holds on its own, written by every rank."""
        self._check_new(name)
        self._per_rank[name] = part

    def register_model_state(self, owner: ModelState) -> None:
        self._model_state = owner

    def _check_new(self, name: str) -> None:
        if name in self._shared or name in self._per_rank:
            raise ValueError(f"checkpoint part {name!r} is registered twice")

    # ------------------------------------------------------------------ finding
    def completed(self) -> List[Path]:
        """Complete step checkpoints, oldest first."""
        return completed_checkpoints(self.directory.parent)

    def at_step(self, step: int) -> Optional[Path]:
        """The complete checkpoint of `step`, or None if it was not kept."""
        folder = self.directory / step_name(step)
        return folder if is_complete(folder) else None

    def latest(self) -> Optional[Path]:
        done = self.completed()
        return done[-1] if done else None

    def named(self, name: str) -> Path:
        """`best` or `last`: the checkpoint folder the symlink points to."""
        return (self.directory / name).resolve()

    def remove_incomplete(self) -> None:
        """Delete scratch folders and unmarked step folders left by an interrupted save."""
        if not self.directory.is_dir():
            return
        for folder in self.directory.iterdir():
            partial = folder.name.startswith(SCRATCH_PREFIX) or (
                folder.name.startswith(STEP_PREFIX) and folder.is_dir() and not is_complete(folder)
            )
            if partial:
                log.warning("removing incomplete checkpoint %s (its save was interrupted)", folder)
                shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------------- saving
    def save(
        self,
        step: int,
        metrics: Optional[Dict[str, float]] = None,
        best: bool = False,
        world_size: int = 1,
    ) -> Path:
        """Write checkpoint `step` on all ranks and commit it; returns its folder.

        With `asynchronous` saves the strategy returns a Future (the state is already
        copied, the files are still being written): the commit waits for it and happens
        at the next `save` or `wait`; at most one save is in flight.
        """
        self.wait()
        final = self.directory / step_name(step)
        if final.is_dir() and is_complete(final):  # already saved at this step
            if self.is_main:
                self._link("last", final)
                if best:
                    self._link("best", final)
            self.barrier()
            return final
        scratch = self.directory / f"{SCRATCH_PREFIX}{step_name(step)}"
        if self.is_main:
            shutil.rmtree(scratch, ignore_errors=True)
            (scratch / RANK_DIR).mkdir(parents=True)
        self.barrier()
        in_flight = self._model_state.save_state(scratch / STATE, self.asynchronous)
        own = {name: part.state_dict() for name, part in self._per_rank.items()}
        _save_synced(own, rank_file(scratch, self.rank))
        if self.is_main:
            shared = {name: part.state_dict() for name, part in self._shared.items()}
            _save_synced(shared, scratch / SHARED)
            meta = {"format_version": FORMAT_VERSION, "step": step, "world_size": world_size}
            meta.update(self.run_metadata)
            if metrics is not None:
                meta["metrics"] = metrics
            _save_synced(meta, scratch / META)
        if in_flight is None:
            self._commit(scratch, final, step, best)
        else:
            self._in_flight = (in_flight, scratch, final, step, best)
        if self.is_main:
            log.info("checkpoint: %s", final)
        return final

    def wait(self) -> None:
        """Finish and commit the save in flight, if any (all ranks call it together)."""
        if self._in_flight is None:
            return
        future, scratch, final, step, best = self._in_flight
        self._in_flight = None
        future.result()  # raises here if writing failed; nothing is committed then
        self._commit(scratch, final, step, best)

    def _commit(self, scratch: Path, final: Path, step: int, best: bool) -> None:
        """Every rank's files are written: rank 0 renames and marks the folder."""
        self.barrier()
        if self.is_main:
            _fsync_tree(scratch)
            os.replace(scratch, final)
            _fsync_dir(self.directory)
            (final / COMPLETE).write_text(f"{step}\n")
            _fsync_dir(final)
            self._link("last", final)
            if best:
                self._link("best", final)
            self._apply_retention()
        self.barrier()

    def _link(self, name: str, target: Path) -> None:
        """Point `name` at `target` atomically (a new symlink renamed over the old one)."""
        link = self.directory / name
        scratch = self.directory / f".{name}.new"
        scratch.unlink(missing_ok=True)
        scratch.symlink_to(target.name, target_is_directory=True)
        os.replace(scratch, link)

    def _apply_retention(self) -> None:
        """Keep the newest `keep_last` checkpoints plus those `best`/`last` point to."""
        protected = {self.named(n) for n in ("best", "last") if (self.directory / n).exists()}
        done = self.completed()
        keep = set(done[-self.keep_last :]) if self.keep_last > 0 else set()
        for folder in done:
            if folder.resolve() not in protected and folder not in keep:
                shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------------ loading
    def load(self, folder: Path) -> int:
        """Restore every registered part from `folder` (collective); returns its step.

        This rank's own parts come from its file; a rank the checkpoint has no file for
        (it was written by fewer ranks) starts them fresh at the checkpoint's step.
        """
        meta = read_meta(folder)
        if meta.get("format_version") != FORMAT_VERSION:
            raise UserError(
                f"resume: {folder} is in checkpoint format {meta.get('format_version')}, this "
                f"dist-lstm reads format {FORMAT_VERSION}. Continue that run with the version "
                "that wrote it; `dist-lstm export` still reads its weights."
            )
        step = int(meta["step"])
        from torch.distributed.checkpoint.api import CheckpointException  # slow import

        try:
            self._model_state.load_state(folder / STATE)
            shared = torch.load(folder / SHARED, map_location="cpu", weights_only=True)
            for name, part in self._shared.items():
                part.load_state_dict(shared[name])
            own = rank_file(folder, self.rank)
            mine = torch.load(own, map_location="cpu", weights_only=True) if own.is_file() else {}
        except UserError:
            raise
        except (Exception, CheckpointException) as exc:  # DCP's is a BaseException
            raise UserError(
                f"resume: {folder} could not be loaded ({exc.__class__.__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}). Its files were changed or "
                "damaged after the save; resume from an earlier checkpoint with resume=PATH."
            ) from exc
        for name, part in self._per_rank.items():
            if name in mine:
                part.load_state_dict(mine[name])
            else:
                part.start_fresh(step)
        return step


def _save_synced(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        torch.save(obj, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_tree(folder: Path) -> None:
    """Flush every file the strategy wrote (DCP and DeepSpeed do not all fsync)."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            _fsync_dir(path)


def write_atomically(payload: Dict[str, Any], target: str | Path) -> Path:
    """torch.save to a temporary name, then rename: readers never see half a file."""
    target = Path(target).expanduser()
    with atomic_write(target) as scratch:
        _save_synced(payload, scratch)
    return target


def read_meta(folder: Path) -> Dict[str, Any]:
    """meta.pt of a complete checkpoint folder, with a clear error otherwise."""
    if not is_complete(folder):
        raise UserError(
            f"{folder} is not a complete checkpoint (no {COMPLETE} marker): its save was "
            "interrupted. Use another checkpoint of the run, e.g. RUN_DIR/checkpoints/last."
        )
    return with_current_model_keys(torch.load(folder / META, map_location="cpu", weights_only=True))


def with_current_model_keys(payload: Dict[str, Any]) -> Dict[str, Any]:
    """A saved payload whose config.model has the keys added since it was written, so
    resuming, averaging and building a model all see one config shape."""
    config = payload.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        return payload
    return {**payload, "config": {**config, "model": {**ADDED_MODEL_KEYS, **config["model"]}}}


def load_model_weights(
    model: torch.nn.Module, state: Dict[str, torch.Tensor], source: Path
) -> None:
    """load_state_dict, but a mismatch names the parameters and both shapes."""
    expected = model.state_dict()
    problems = [
        f"{name}: checkpoint {tuple(state[name].shape)} vs model {tuple(tensor.shape)}"
        for name, tensor in expected.items()
        if name in state and state[name].shape != tensor.shape
    ]
    problems += [f"{name}: missing from the checkpoint" for name in expected if name not in state]
    problems += [f"{name}: not a parameter of this model" for name in state if name not in expected]
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise UserError(
            f"{source}: the weights do not match the model built from its config ({shown}). "
            "The checkpoint's config or weights were changed; use the files as training wrote them."
        )
    model.load_state_dict(state)
