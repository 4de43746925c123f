"""Using a trained model: load a checkpoint with its tokenizer and config, translate text.

A checkpoint (a training checkpoint folder, or one file from `dist-lstm export` or
`average`) carries the resolved config and the serialized SentencePiece models, so it is
all `dist-lstm translate` needs; a run directory resolves to its best checkpoint.
Several checkpoints that share a tokenizer translate as one ensemble.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from omegaconf import OmegaConf

from dist_lstm.batch import PAD_ID
from dist_lstm.checkpoint import is_checkpoint_folder, load_checkpoint, load_model_weights
from dist_lstm.config import register_configs
from dist_lstm.config.choices import PRECISIONS
from dist_lstm.config.schema import TrainerConfig
from dist_lstm.data.tokenizer import Tokenizer
from dist_lstm.errors import UserError
from dist_lstm.model import Ensemble, Seq2Seq, build_model
from dist_lstm.precision import autocast, check_precision, configure_tf32
from dist_lstm.translate.alignment import pharaoh, word_alignment
from dist_lstm.translate.search import Hypothesis, beam_search, best_hypotheses, decodes_greedily

log = logging.getLogger(__name__)

# Sentences per greedy search call, in batches: the padded source ids of one call are
# held at once, while the decoder works on `batch_size` of them at a time.
GREEDY_BATCHES_PER_CALL = 64

# The widest beam any command accepts (translate, evaluate, tune-search, serve --max-beam):
# each search step scores beam x batch hypotheses over the whole target vocabulary, so a
# beam of 100,000 was killed by the kernel for memory, while translations stop improving
# long before 100 (usually by 5-10).
MAX_BEAM = 100


def check_beam(beam: int, option: str = "--beam") -> None:
    """Refuse a beam the search cannot hold, naming `option`, the maximum and why."""
    if beam < 1:
        raise UserError(f"{option} {beam} is invalid: use 1 (greedy) or more.")
    if beam > MAX_BEAM:
        raise UserError(
            f"{option} {beam} is too wide: the largest beam is {MAX_BEAM}. Each search step "
            "scores beam x --batch-size hypotheses over the whole target vocabulary, so memory "
            "grows with the beam; translations stop improving long before (usually by 5-10)."
        )


@dataclass
class LoadedModel:
    model: Seq2Seq | Ensemble
    tokenizer: Tokenizer
    config: Dict[str, Any]  # the run's resolved config (an ensemble's: its first model's)
    data_config: Dict[str, Any]  # the run's data group, interpolations kept
    step: int
    path: Path
    # Every checkpoint of an ensemble, `path` first; just `path` for one model.
    paths: Tuple[Path, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        self.paths = self.paths or (self.path,)


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint folder or file, or a run directory / checkpoints folder (its best)."""
    path = Path(path).expanduser()
    if path.is_dir() and not is_checkpoint_folder(path):
        for candidate in (path / "checkpoints" / "best", path / "best"):
            if candidate.exists():
                return candidate.resolve()
        raise UserError(
            f"{path} is a directory without a checkpoint: give a checkpoint (e.g. "
            "RUN_DIR/checkpoints/best, or a file from `dist-lstm export`) or a run "
            "directory that has one."
        )
    return path


def load_model(path: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild the model from a checkpoint's own config and tokenizer, in eval mode."""
    path = resolve_checkpoint_path(path)
    payload = load_checkpoint(path)
    for key, what in (("config", "model config"), ("tokenizer", "tokenizer")):
        if key not in payload:
            raise UserError(
                f"{path} has no {what} inside, so it cannot be used for translation. "
                "Use a checkpoint written by `python train.py`, `dist-lstm export` or "
                "`dist-lstm average`."
            )
    tokenizer = Tokenizer(payload["tokenizer"])
    config = payload["config"]
    model = build_model(config["model"], tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    load_model_weights(model, payload["model"], path)
    return LoadedModel(
        model=model.to(device).eval(),
        tokenizer=tokenizer,
        config=config,
        data_config=payload.get("data_config", config["data"]),
        step=int(payload.get("step", 0)),
        path=path,
    )


def load_models(paths: Sequence[str | Path], device: torch.device | str = "cpu") -> LoadedModel:
    """One checkpoint: its model. Several: an Ensemble that search decodes as one model;
    its length limits, data and step are those of the first checkpoint."""
    loaded = [load_model(path, device) for path in paths]
    first = loaded[0]
    if len(loaded) == 1:
        return first
    for other in loaded[1:]:
        if other.tokenizer.fingerprint != first.tokenizer.fingerprint:
            raise UserError(
                f"{other.path} was trained with another tokenizer than {first.path}: the "
                "models of an ensemble must share one (trained on the same data with the "
                "same data.tokenizer options)."
            )
    ensemble = Ensemble([item.model for item in loaded]).eval()
    return replace(first, model=ensemble, paths=tuple(item.path for item in loaded))


def dataset_split_files(data_config: Dict[str, Any], split: str) -> Tuple[str, str]:
    """Source and reference files of a run's `split` (test/valid), resolved on this machine."""
    register_configs()  # the ${embedded_data:...} resolver of the shipped datasets
    data = OmegaConf.create(data_config)
    src, ref = data.get(f"{split}_src"), data.get(f"{split}_tgt")
    if not src or not ref:
        raise UserError(f"the run's data config has no {split} split; give --src and --ref.")
    return src, ref


@dataclass
class SearchOptions:
    beam: int = 5
    alpha: float = 0.0  # GNMT length penalty
    # Output limit a * source length + b: validation's (the schema's trainer.decode_*).
    max_len_a: float = TrainerConfig.decode_max_len_a
    max_len_b: int = TrainerConfig.decode_max_len_b
    batch_size: int = 64  # sentences decoded at once (greedy refills places as they finish)
    # 32, or bf16/fp16 autocast: products in 16 bits, scores and softmax in fp32
    precision: str = "32"

    @property
    def greedy(self) -> bool:
        """Whether best_hypotheses decodes these options greedily."""
        return decodes_greedily(self.beam)

    def validate(self) -> None:
        check_beam(self.beam)
        # the same rule as trainer.decode_max_len_*: a limit under one token has no output
        if self.max_len_a < 0 or self.max_len_b < 1:
            raise UserError(
                f"--max-len-a {self.max_len_a:g} --max-len-b {self.max_len_b}: the output limit "
                "a x source_length + b needs room for one token: use a >= 0 and b >= 1."
            )
        if self.batch_size < 1:
            raise UserError(f"--batch-size {self.batch_size} is invalid: use 1 or more.")
        if self.alpha < 0:
            raise UserError(f"--alpha {self.alpha} is invalid: use 0 (off) or more.")
        if self.precision not in PRECISIONS:
            raise UserError(
                f"--precision {self.precision} is invalid: use one of {', '.join(PRECISIONS)}."
            )


def run_output_limit(loaded: LoadedModel) -> Tuple[float, int]:
    """The (a, b) of the output limit a x source_length + b that the checkpoint's run
    validated with (trainer.decode_max_len_*), so a served or translated sentence is cut
    where validation cut it; the schema's default for a checkpoint saved without one."""
    trainer = loaded.config.get("trainer", {})
    return (
        trainer.get("decode_max_len_a", TrainerConfig.decode_max_len_a),
        trainer.get("decode_max_len_b", TrainerConfig.decode_max_len_b),
    )


@dataclass
class DetailedTranslation:
    """One sentence as `serve` and `translate --alignments` show it."""

    source: str
    translation: str
    score: float  # the best hypothesis's length-normalized log-probability
    source_pieces: List[str]
    target_pieces: List[str]
    attention: Optional[List[List[float]]] = None  # (target pieces, source pieces)
    alignment: Optional[str] = None  # Pharaoh word alignment "i-j ..."


class Translator:
    """Raw sentences in, detokenized translations out, in input order."""

    def __init__(
        self, loaded: LoadedModel, options: SearchOptions, max_source_len: Optional[int] = None
    ):
        options.validate()
        self.loaded = loaded
        self.options = options
        self.max_source_len = max_source_len or loaded.config["data"]["max_len"]
        self.device = next(loaded.model.parameters()).device
        check_precision(options.precision, self.device, option="--precision")
        # fp32 products as the run trained them: TF32 or not (trainer.tf32; older
        # checkpoints without the key trained with the schema's default)
        trained_tf32 = loaded.config.get("trainer", {}).get("tf32", TrainerConfig.tf32)
        configure_tf32(bool(trained_tf32), self.device)

    def translate(self, sentences: Sequence[str], first_line: int = 1) -> List[str]:
        """One output per input; an empty (or blank) line gives an empty line.

        `first_line` numbers the input lines in warnings about truncated sentences.
        """
        hypotheses = self.translate_ids(self.source_ids(sentences, first_line))
        return self.loaded.tokenizer.decode("tgt", hypotheses)

    def translate_detailed(
        self, sentences: Sequence[str], with_attention: bool = False, first_line: int = 1
    ) -> List["DetailedTranslation"]:
        """Translations with their scores and pieces and, `with_attention`, the attention
        matrix over pieces and the word alignment. Always beam search (width 1 is what
        greedy search gives), since only it keeps scores and attention per hypothesis."""
        tokenizer = self.loaded.tokenizer
        sources = self.source_ids(sentences, first_line)
        best = self._best_with_details(sources, with_attention)
        texts = tokenizer.decode("tgt", [[] if h is None else h.tokens for h in best])
        out = []
        for sentence, ids, hyp, text in zip(sentences, sources, best, texts):
            src_pieces = tokenizer.pieces("src", ids)
            tgt_pieces = tokenizer.pieces("tgt", hyp.tokens) if hyp is not None else []
            item = DetailedTranslation(
                source=sentence,
                translation=text,
                score=hyp.score if hyp is not None else 0.0,
                source_pieces=src_pieces,
                target_pieces=tgt_pieces,
            )
            if with_attention and hyp is not None and hyp.attention is not None:
                weights = hyp.attention.numpy()
                item.attention = weights.astype(float).round(4).tolist()
                item.alignment = pharaoh(word_alignment(weights, src_pieces, tgt_pieces))
            elif with_attention:
                item.attention, item.alignment = [], ""
            out.append(item)
        return out

    def source_ids(self, sentences: Sequence[str], first_line: int = 1) -> List[List[int]]:
        """Subword ids of each sentence, cut to the model's maximum source length."""
        ids = self.loaded.tokenizer.encode("src", sentences)
        for offset, seq in enumerate(ids):
            if len(seq) > self.max_source_len:
                log.warning(
                    "line %d has %d subword tokens; truncated to the model's maximum of %d",
                    first_line + offset,
                    len(seq),
                    self.max_source_len,
                )
                ids[offset] = seq[: self.max_source_len]
        return ids

    @torch.no_grad()
    def translate_ids(self, sources: Sequence[Sequence[int]]) -> List[List[int]]:
        """Subword ids in, best hypothesis ids out; length-sorted batches, input order kept.

        Greedy search takes many batches per call and keeps `batch_size` sentences in
        flight, refilling places as sentences finish (see greedy_search).
        """
        out: List[List[int]] = [[] for _ in sources]
        todo = sorted((i for i, s in enumerate(sources) if s), key=lambda i: len(sources[i]))
        size = self.options.batch_size
        if self.options.greedy:
            size *= GREEDY_BATCHES_PER_CALL
        with autocast(self.options.precision, self.device):
            for start in range(0, len(todo), size):
                rows = todo[start : start + size]
                for row, hyp in zip(rows, self._decode([sources[i] for i in rows])):
                    out[row] = hyp
        return out

    @torch.no_grad()
    def _best_with_details(
        self, sources: Sequence[Sequence[int]], with_attention: bool
    ) -> List[Optional[Hypothesis]]:
        """The best beam-search hypothesis per source (None for an empty one)."""
        out: List[Optional[Hypothesis]] = [None for _ in sources]
        todo = sorted((i for i, s in enumerate(sources) if s), key=lambda i: len(sources[i]))
        opts = self.options
        with autocast(opts.precision, self.device):
            for start in range(0, len(todo), opts.batch_size):
                rows = todo[start : start + opts.batch_size]
                src, lengths = self._padded([sources[i] for i in rows])
                found = beam_search(
                    self.loaded.model,
                    src,
                    lengths,
                    opts.beam,
                    opts.max_len_a,
                    opts.max_len_b,
                    opts.alpha,
                    with_attention=with_attention,
                )
                for row, hyp in zip(rows, found):
                    out[row] = hyp
        return out

    def _padded(self, batch: Sequence[Sequence[int]]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Source ids (B, S) padded, on the model's device, and lengths (B,) on the host.
        To a GPU from pinned memory, so the copy does not wait for the device."""
        lengths = torch.tensor([len(s) for s in batch])
        src = torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(s) for s in batch], batch_first=True, padding_value=PAD_ID
        )
        if self.device.type == "cuda":
            src = src.pin_memory()
        return src.to(self.device, non_blocking=True), lengths

    def _decode(self, batch: Sequence[Sequence[int]]) -> List[List[int]]:
        opts = self.options
        src, lengths = self._padded(batch)
        return best_hypotheses(
            self.loaded.model,
            src,
            lengths,
            opts.beam,
            opts.max_len_a,
            opts.max_len_b,
            opts.alpha,
            rows_in_flight=opts.batch_size,
        )
