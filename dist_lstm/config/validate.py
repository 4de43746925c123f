"""Value checks that the type system cannot express, run before any work starts.

Each failure raises ConfigError naming the full key, the bad value and what to set instead,
so a user fixes the command line instead of reading a traceback from deep inside torch.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from omegaconf import DictConfig

from dist_lstm.data.tokenizer import TOKENIZER_TYPES
from dist_lstm.errors import ConfigError
from dist_lstm.evaluation import MONITOR_MODES
from dist_lstm.logging.wandb import WANDB_MODES
from dist_lstm.model.attention import ATTENTIONS
from dist_lstm.precision import PRECISIONS
from dist_lstm.strategy import STRATEGIES
from dist_lstm.strategy.comm_hooks import COMM_HOOKS
from dist_lstm.strategy.ddp import BACKENDS
from dist_lstm.topology import DEVICES
from dist_lstm.train.optim import OPTIMIZERS, SCHEDULES
from dist_lstm.train.stopping import parse_duration


def _require(ok: bool, key: str, value: Any, fix: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {fix}")


def _choice(key: str, value: str, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    _require(value in choices, key, value, f"choose one of {', '.join(choices)}.")


def _positive(key: str, value: Optional[float], allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    _require(value is not None and value > 0, key, value, "it must be greater than 0.")


def validate_data(data: DictConfig) -> None:
    for i, corpus in enumerate(data.corpora):
        _require(
            corpus.weight > 0,
            f"data.corpora[{i}].weight",
            corpus.weight,
            "use a positive weight (1: every pair once an epoch; 0.5: half of them); "
            "leave a corpus out instead of weighting it 0.",
        )
    _positive("data.max_len_ratio", data.max_len_ratio, allow_none=True)
    if data.languages:
        for key in ("src_lang", "tgt_lang"):
            _require(
                data[key] in data.languages,
                f"data.{key}",
                data[key],
                f"dataset '{data.name}' has {', '.join(data.languages)}.",
            )
    _require(
        data.src_lang != data.tgt_lang,
        "data.tgt_lang",
        data.tgt_lang,
        "source and target languages must differ.",
    )
    _positive("data.max_len", data.max_len)
    # A batch must hold at least one maximal pair: max_len tokens plus BOS/EOS.
    _require(
        data.max_tokens >= data.max_len + 1,
        "data.max_tokens",
        data.max_tokens,
        f"a batch must hold one sentence of data.max_len={data.max_len} tokens plus EOS; "
        f"set data.max_tokens >= {data.max_len + 1} or lower data.max_len.",
    )
    _positive("data.max_train_examples", data.max_train_examples, allow_none=True)
    _positive("data.max_valid_examples", data.max_valid_examples, allow_none=True)
    _choice("data.tokenizer.type", data.tokenizer.type, TOKENIZER_TYPES)
    _require(
        data.tokenizer.vocab_size >= 8,
        "data.tokenizer.vocab_size",
        data.tokenizer.vocab_size,
        "use at least 8 (4 special symbols plus pieces); thousands is typical.",
    )
    _require(
        0.0 < data.tokenizer.character_coverage <= 1.0,
        "data.tokenizer.character_coverage",
        data.tokenizer.character_coverage,
        "use a fraction in (0, 1].",
    )


def validate_model(model: DictConfig) -> None:
    for key in ("emb_dim", "hidden_size", "encoder_layers", "decoder_layers"):
        _positive(f"model.{key}", model[key])
    if model.bidirectional:
        _require(
            model.hidden_size % 2 == 0,
            "model.hidden_size",
            model.hidden_size,
            "a bidirectional encoder splits it between two directions; use an even size.",
        )
    _choice("model.attention", model.attention, ATTENTIONS)
    for key in ("dropout", "word_dropout"):
        _require(0.0 <= model[key] < 1.0, f"model.{key}", model[key], "use a value in [0, 1).")


def validate_optim(optim: DictConfig, trainer: DictConfig) -> None:
    _choice("optim.name", optim.name, OPTIMIZERS)
    _positive("optim.lr", optim.lr)
    _require(optim.weight_decay >= 0, "optim.weight_decay", optim.weight_decay, "use >= 0.")
    _require(
        len(optim.betas) == 2 and all(0.0 <= b < 1.0 for b in optim.betas),
        "optim.betas",
        list(optim.betas),
        "give two values in [0, 1), e.g. [0.9,0.98].",
    )
    _require(0.0 <= optim.momentum < 1.0, "optim.momentum", optim.momentum, "use [0, 1).")
    _choice("optim.schedule", optim.schedule, SCHEDULES)
    _require(optim.warmup_steps >= 0, "optim.warmup_steps", optim.warmup_steps, "use >= 0.")
    if optim.schedule == "cosine":
        _require(
            trainer.max_steps is not None,
            "trainer.max_steps",
            trainer.max_steps,
            "optim.schedule=cosine decays to trainer.max_steps; set it.",
        )
        _require(
            0 <= optim.min_lr < optim.lr, "optim.min_lr", optim.min_lr, "use 0 <= min_lr < lr."
        )
    if optim.schedule == "plateau":
        _require(
            optim.warmup_steps == 0,
            "optim.warmup_steps",
            optim.warmup_steps,
            "optim.schedule=plateau has no warmup; set optim.warmup_steps=0.",
        )
        _require(
            0.0 < optim.plateau_factor < 1.0,
            "optim.plateau_factor",
            optim.plateau_factor,
            "use a factor in (0, 1).",
        )


def validate_trainer(trainer: DictConfig) -> None:
    _require(
        any(trainer[k] is not None for k in ("max_steps", "max_epochs", "max_time")),
        "trainer.max_epochs",
        None,
        "set at least one of trainer.max_steps, trainer.max_epochs, trainer.max_time.",
    )
    _positive("trainer.max_steps", trainer.max_steps, allow_none=True)
    _positive("trainer.max_epochs", trainer.max_epochs, allow_none=True)
    if trainer.max_time is not None:
        try:
            parse_duration(trainer.max_time)
        except ValueError:
            raise ConfigError(
                f"trainer.max_time={trainer.max_time!r} is invalid: give seconds (1800) "
                "or [[DD:]HH:]MM:SS (00:30:00)."
            ) from None
    _positive("trainer.accumulate_grad_batches", trainer.accumulate_grad_batches)
    _require(
        0.0 <= trainer.label_smoothing < 1.0,
        "trainer.label_smoothing",
        trainer.label_smoothing,
        "use a value in [0, 1).",
    )
    _require(
        trainer.val_every_steps >= 0,
        "trainer.val_every_steps",
        trainer.val_every_steps,
        "use >= 0 (0 validates at the end of every epoch).",
    )
    _positive("trainer.log_every_steps", trainer.log_every_steps)
    _choice("trainer.monitor", trainer.monitor, MONITOR_MODES)
    _require(
        trainer.early_stopping_patience >= 0,
        "trainer.early_stopping_patience",
        trainer.early_stopping_patience,
        "use >= 0 (0 disables early stopping).",
    )
    _require(
        trainer.decode_max_len_a >= 0 and trainer.decode_max_len_b >= 1,
        "trainer.decode_max_len_b",
        trainer.decode_max_len_b,
        "decoding needs room for at least one token: a >= 0 and b >= 1.",
    )
    _positive("trainer.val_beam", trainer.val_beam)
    _choice("trainer.device", trainer.device, DEVICES)


def validate_strategy(strategy: DictConfig) -> None:
    _choice("strategy.name", strategy.name, ("auto", *STRATEGIES))
    _choice("strategy.precision", strategy.precision, PRECISIONS)
    _require(
        strategy.clip_grad_norm >= 0,
        "strategy.clip_grad_norm",
        strategy.clip_grad_norm,
        "use >= 0 (0 disables clipping).",
    )
    if "backend" in strategy:
        _choice("strategy.backend", strategy.backend, BACKENDS)
        _positive("strategy.timeout_s", strategy.timeout_s)
    if "zero_stage" in strategy:
        _require(
            strategy.zero_stage in (0, 1, 2, 3),
            "strategy.zero_stage",
            strategy.zero_stage,
            "DeepSpeed ZeRO stages are 0, 1, 2 and 3.",
        )


def validate_comm_hook(strategy: DictConfig, trainer: DictConfig) -> None:
    """DDP's gradient communication keys (strategy/comm_hooks.py)."""
    if "comm_hook" not in strategy:
        return
    _choice("strategy.comm_hook", strategy.comm_hook, COMM_HOOKS)
    _positive("strategy.bucket_cap_mb", strategy.bucket_cap_mb, allow_none=True)
    _require(
        strategy.powersgd_rank >= 1,
        "strategy.powersgd_rank",
        strategy.powersgd_rank,
        "use 1 or more (torch advises starting at 1 and doubling until quality matches "
        "strategy.comm_hook=none).",
    )
    _require(
        strategy.powersgd_start_step >= 2,
        "strategy.powersgd_start_step",
        strategy.powersgd_start_step,
        "use 2 or more: DDP rebuilds its gradient buckets after step 1, and PowerSGD's "
        "error feedback can only begin after that.",
    )
    if strategy.comm_hook != "powersgd":
        return
    _require(
        strategy.precision != "fp16",
        "strategy.comm_hook",
        strategy.comm_hook,
        "under strategy.precision=fp16, PowerSGD's error feedback would keep an overflowed "
        "(inf) gradient and turn every later step into NaN; use strategy.precision=bf16 or "
        "32 with powersgd, or strategy.comm_hook=fp16.",
    )
    _require(
        trainer.max_steps is None or strategy.powersgd_start_step < trainer.max_steps,
        "strategy.powersgd_start_step",
        strategy.powersgd_start_step,
        f"PowerSGD all-reduces in full until this step, so it would never compress in "
        f"trainer.max_steps={trainer.max_steps}; set it below, e.g. "
        f"{max(2, (trainer.max_steps or 0) // 10)} (a tenth of the run, as torch advises).",
    )


def validate_checkpoint(checkpoint: DictConfig, strategy: DictConfig) -> None:
    _positive("checkpoint.every_steps", checkpoint.every_steps, allow_none=True)
    _positive("checkpoint.every_minutes", checkpoint.every_minutes, allow_none=True)
    _require(
        not (checkpoint.async_save and strategy.name == "deepspeed"),
        "checkpoint.async_save",
        checkpoint.async_save,
        "DeepSpeed writes its checkpoints synchronously; use it with strategy=ddp or single.",
    )
    _require(
        checkpoint.keep_last >= 1,
        "checkpoint.keep_last",
        checkpoint.keep_last,
        "keep at least the newest checkpoint (>= 1); resume needs it.",
    )


def validate_launcher(launcher: DictConfig, strategy: DictConfig) -> None:
    _positive("launcher.nproc_per_node", launcher.nproc_per_node)
    _require(
        launcher.max_restarts >= 0,
        "launcher.max_restarts",
        launcher.max_restarts,
        "use 0 (no restarts) or a positive count.",
    )
    _require(
        not (launcher.nproc_per_node > 1 and strategy.name == "single"),
        "launcher.nproc_per_node",
        launcher.nproc_per_node,
        "strategy=single trains in one process; use strategy=ddp, deepspeed or auto.",
    )


def validate_config(cfg: DictConfig) -> None:
    """Check every value range; raise ConfigError naming the first bad key."""
    _require(cfg.seed >= 0, "seed", cfg.seed, "use a non-negative integer.")
    validate_data(cfg.data)
    validate_model(cfg.model)
    validate_optim(cfg.optim, cfg.trainer)
    validate_trainer(cfg.trainer)
    validate_strategy(cfg.strategy)
    validate_comm_hook(cfg.strategy, cfg.trainer)
    validate_checkpoint(cfg.checkpoint, cfg.strategy)
    validate_launcher(cfg.launcher, cfg.strategy)
    _choice("logger.wandb.mode", cfg.logger.wandb.mode, WANDB_MODES)
