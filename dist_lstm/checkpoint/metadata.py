"""The run metadata every checkpoint carries in meta.pt: what `dist-lstm translate`,
`evaluate`, `export` and a resumed run need to know about the run that wrote it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any, Dict, Mapping, Optional


def library_versions() -> Dict[str, str]:
    """Recorded in every checkpoint, to explain a checkpoint that no longer loads."""
    found = {}
    for package in ("dist-lstm", "torch", "deepspeed", "sentencepiece", "hydra-core"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def run_metadata(
    config: Mapping[str, Any],
    data_config: Mapping[str, Any],
    tokenizer: Mapping[str, Any],
    wandb_run_id: Optional[str],
    precision: str,
) -> Dict[str, Any]:
    """config: resolved; data_config: unresolved, so `evaluate --split` finds the shipped
    data on another machine; tokenizer: its payload (the SentencePiece models);
    precision: the one training used, as the strategy applied it."""
    return {
        "config": dict(config),
        "data_config": dict(data_config),
        "tokenizer": tokenizer,
        "versions": library_versions(),
        "wandb_run_id": wandb_run_id,
        "precision": precision,
    }
