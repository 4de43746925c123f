"""The loaded models behind the server, and one translation job over one of them.

Nothing here knows HTTP: the app validates requests into `Job`s, the batcher joins jobs
that share their options, and `TranslationService.run` decodes them in one search.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Sequence

import torch

from dist_lstm.translate.inference import (
    LoadedModel,
    SearchOptions,
    Translator,
    load_model,
    run_output_limit,
)


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for; over a limit it gets a 4xx naming the field."""

    max_chars: int = 1000  # characters per text
    max_texts: int = 64  # texts per request
    max_beam: int = 20
    queue_size: int = 32  # requests waiting; more get 503
    batch_texts: int = 64  # texts decoded together, across requests


@dataclass(frozen=True)
class JobOptions:
    """Requests with equal options can share one search."""

    model: str
    beam: int
    alignments: bool


@dataclass
class ServedModel:
    name: str
    loaded: LoadedModel
    scores: Dict[str, float]  # BLEU etc. the checkpoint's run recorded, if found
    options: SearchOptions  # the server's search, with this run's output limit

    def info(self) -> Dict[str, Any]:
        config = self.loaded.config
        return {
            "name": self.name,
            "checkpoint": str(self.loaded.path),
            "step": self.loaded.step,
            "languages": {
                "source": config.get("data", {}).get("src_lang"),
                "target": config.get("data", {}).get("tgt_lang"),
            },
            "model": config.get("model", {}),
            "src_vocab_size": self.loaded.tokenizer.src_vocab_size,
            "tgt_vocab_size": self.loaded.tokenizer.tgt_vocab_size,
            "parameters": sum(p.numel() for p in self.loaded.model.parameters()),
            "recorded_scores": self.scores,
            "output_limit": {
                "max_len_a": self.options.max_len_a,
                "max_len_b": self.options.max_len_b,
            },
        }


def recorded_scores(checkpoint: Path, step: int) -> Dict[str, float]:
    """Validation scores at `step` and the test scores of the run that wrote a training
    checkpoint (RUN/checkpoints/NAME), from RUN/metrics.jsonl; empty when not found."""
    metrics = checkpoint.parent.parent / "metrics.jsonl"
    if not metrics.is_file():
        return {}
    scores: Dict[str, float] = {}
    for line in metrics.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("step") == step and "val_bleu" in record:
            scores.update(val_bleu=record["val_bleu"], val_chrf=record.get("val_chrf"))
        if record.get("test_step") == step and "test_bleu" in record:
            scores.update(test_bleu=record["test_bleu"], test_chrf=record.get("test_chrf"))
    return {key: round(value, 2) for key, value in scores.items() if value is not None}


def model_names(paths: Sequence[Path]) -> List[str]:
    """Short distinct names for the page: RUN/CHECKPOINT for a training checkpoint, the
    file's stem for an exported one."""
    names = []
    for path in paths:
        in_run = path.parent.name == "checkpoints"
        name = f"{path.parent.parent.name}/{path.name}" if in_run else path.stem
        base, suffix = name or "model", 2
        while name in names:
            name, suffix = f"{base}-{suffix}", suffix + 1
        names.append(name)
    return names


class TranslationService:
    """The models a server offers, each with the search options the server was started
    with and the output limit its own run validated with (models side by side may come
    from runs with different limits)."""

    def __init__(self, checkpoints: Sequence[str | Path], options: SearchOptions, device: str):
        loaded = [load_model(path, device) for path in checkpoints]
        names = model_names([item.path for item in loaded])
        self.models: Dict[str, ServedModel] = {}
        for name, item in zip(names, loaded):
            max_len_a, max_len_b = run_output_limit(item)
            own = replace(options, max_len_a=max_len_a, max_len_b=max_len_b)
            Translator(item, own)  # a bad option fails now, not per request
            self.models[name] = ServedModel(name, item, recorded_scores(item.path, item.step), own)
        self.options = options

    @property
    def names(self) -> List[str]:
        return list(self.models)

    def run(self, job: JobOptions, texts: Sequence[str]) -> List[Dict[str, Any]]:
        """Translate `texts` with one model and one beam; the attention matrix and word
        alignment of each only when the job asks for alignments."""
        served = self.models[job.model]
        translator = Translator(served.loaded, replace(served.options, beam=job.beam))
        with torch.no_grad():
            details = translator.translate_detailed(texts, with_attention=job.alignments)
        out = []
        for item in details:
            record = asdict(item)
            if not job.alignments:
                record.pop("attention"), record.pop("alignment")
            out.append(record)
        return out

    def info(self, limits: ServeLimits) -> Dict[str, Any]:
        return {
            "models": [served.info() for served in self.models.values()],
            "search": {"beam": self.options.beam, "alpha": self.options.alpha},
            "limits": asdict(limits),
        }
