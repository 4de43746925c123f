"""The names every config key with a fixed set of values offers, declared once, here.

Config validation checks a value against these lists, and the modules that act on a
choice (the optimizer builders, the attention scorers, the process-group backends, ...)
import them from here. So the config package knows every choice without importing the
code behind it, and stands below that code in the import layers (pyproject.toml). The
strategy names are the exception: each is the `name` default of its schema
(config/schema.py STRATEGY_SCHEMAS), which the strategy registry pairs with its builder.
"""

from __future__ import annotations

from typing import Dict, Mapping, Sequence, TypeVar

T = TypeVar("T")

# data.tokenizer.type: SentencePiece model types.
TOKENIZER_TYPES = ("bpe", "unigram")
# model.attention: Luong dot and general, Bahdanau additive (model/attention.py).
ATTENTIONS = ("dot", "general", "bahdanau")
# optim.name (builders: optim.py).
OPTIMIZERS = ("adamw", "sgd")
# optim.schedule: the warm-up schedules of optim.lr_factor, and plateau (steps at validation).
SCHEDULES = ("constant", "inverse_sqrt", "cosine", "plateau")
# trainer.monitor: the validation metrics evaluation.summarize reports, and which way is
# better; picks the best checkpoint and drives early stopping and plateau schedules.
MONITOR_MODES: Dict[str, str] = {
    "val_bleu": "max",
    "val_chrf": "max",
    "val_loss": "min",
    "val_ppl": "min",
}
# trainer.device (and the CLI's --device): auto is this process's GPU if any, else the CPU.
DEVICES = ("auto", "cpu", "cuda")
# strategy.precision (and the CLI's --precision): full, or autocast to bf16 / fp16.
PRECISIONS = ("32", "bf16", "fp16")
# strategy.backend of ddp and deepspeed: auto is nccl on GPUs, gloo on CPUs.
BACKENDS = ("auto", "nccl", "gloo")
# strategy.comm_hook of ddp: how gradients cross the network (strategy/comm_hooks.py).
COMM_HOOKS = ("none", "fp16", "bf16", "powersgd")
# logger.wandb.mode.
WANDB_MODES = ("auto", "online", "offline", "disabled")


def registry(key: str, names: Sequence[str], entries: Mapping[str, T]) -> Dict[str, T]:
    """`entries` (a module's implementation of each choice of `key`) in the order of
    `names`. Raises at import when the two part ways, so a name added here without its
    implementation (or the reverse) fails every start instead of the run that picks it."""
    if set(entries) != set(names):
        raise RuntimeError(
            f"{key}: config/choices.py offers {', '.join(names)} but the registry has "
            f"{', '.join(entries)}; add or remove the implementation to match."
        )
    return {name: entries[name] for name in names}
