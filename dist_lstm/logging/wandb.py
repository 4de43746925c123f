"""Weights & Biases logging from rank 0: config, every metrics record, a summary.

The default never stops at a login prompt: `mode=auto` goes online only when credentials
exist and otherwise writes an offline run under RUN_DIR/wandb/ (upload it later with
`wandb sync`). Records are logged at the trainer's global step, not W&B's own counter,
which starts again at 0 in every process that resumes a run. The run id is kept in each
checkpoint, so a resumed run continues the same W&B run (resume="allow").
"""

from __future__ import annotations

import logging
import netrc
import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from omegaconf import DictConfig, OmegaConf

from dist_lstm.errors import UserError

log = logging.getLogger(__name__)


def has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_mode(configured: str) -> str:
    """The mode to run W&B in: WANDB_MODE if set, else the configured one, with `auto`
    and a forced `online` checked against the credentials."""
    from_env = os.environ.get("WANDB_MODE")
    if from_env:
        return from_env
    if configured == "online" and not has_credentials():
        raise UserError(
            "logger.wandb.mode=online but no W&B credentials were found: run `wandb login` "
            "or set WANDB_API_KEY, or use logger.wandb.mode=offline (sync later)."
        )
    if configured == "auto":
        mode = "online" if has_credentials() else "offline"
        if mode == "offline":
            log.info("W&B: no credentials, logging offline (upload with `wandb sync`)")
        return mode
    return configured


class WandbLogger:
    """One W&B run; `log` takes the same records as metrics.jsonl."""

    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        config: Dict[str, Any],
        run_id: Optional[str] = None,
    ):
        self.run = None
        self.run_id = run_id
        mode = resolve_mode(cfg.mode)
        if mode == "disabled":
            return
        import wandb

        self.run_id = run_id or uuid.uuid4().hex[:12]
        self.run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group,
            tags=list(OmegaConf.to_container(cfg.tags)) if cfg.tags else None,
            name=cfg.name or Path(run_dir).name,
            config=config,
            dir=str(run_dir),
            id=self.run_id,
            resume="allow",
            mode=mode,
            settings=wandb.Settings(console="off", silent=True),
        )
        log.info("W&B run %s (%s) in %s", self.run_id, mode, run_dir / "wandb")

    def log(self, record: Dict[str, Any]) -> None:
        if self.run is None:
            return
        values = {k: v for k, v in record.items() if k != "step" and v is not None}
        with self._service_may_be_gone("log"):
            self.run.log(values, step=int(record["step"]))

    def log_samples(self, step: int, rows: List[List[Any]]) -> None:
        if self.run is None:
            return
        import wandb

        table = wandb.Table(columns=["index", "hypothesis", "reference"], data=rows)
        with self._service_may_be_gone("log samples"):
            self.run.log({"val_samples": table}, step=step)

    def summarize(self, values: Dict[str, Any]) -> None:
        if self.run is None:
            return
        with self._service_may_be_gone("summarize"):
            for key, value in values.items():
                if value is not None:
                    self.run.summary[key] = value

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            with self._service_may_be_gone("finish"):
                self.run.finish(exit_code=exit_code)
            self.run = None

    @contextmanager
    def _service_may_be_gone(self, action: str) -> Iterator[None]:
        """W&B's service is a child process, and a signal sent to every process of a job
        (SLURM's preemption, scancel of a step) stops it with the trainer. Logging must
        then never cost the checkpoint or the exit status: warn once, stop logging to
        W&B in this process, and let a resumed run continue the same W&B run."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - any failure of the service ends W&B here
            log.warning(
                "W&B: could not %s (%s: %s); its service process has probably been "
                "stopped. W&B logging stops for this process; metrics.jsonl keeps every "
                "record, and a resumed run continues W&B run %s.",
                action,
                type(exc).__name__,
                exc,
                self.run_id,
            )
            self.run = None
            _forget_service()


def _forget_service() -> None:
    """Drop W&B's connection to its dead service, which also withdraws the exit hook that
    would otherwise print a second traceback when the process ends."""
    import wandb

    try:
        wandb.teardown()
    except Exception:  # noqa: BLE001 - the service is gone; there is nothing to tear down
        pass
