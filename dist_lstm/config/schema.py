"""Dataclass schemas for every config group, registered in Hydra's ConfigStore.

`conf/config.yaml` starts its defaults list with `base_config`, so every YAML file and
command-line override is merged into these typed dataclasses: a misspelt key or a value of
the wrong type fails at start-up with the key's full name, before any work begins. Value
ranges (lr > 0, ...) are checked afterwards by `validate.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Type

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from dist_lstm.config.resolvers import RESOLVERS


@dataclass
class TokenizerConfig:
    """SentencePiece options; they are part of the tokenizer cache key."""

    type: str = "bpe"  # choices.py TOKENIZER_TYPES
    joint: bool = True  # one vocabulary for source and target, or one per language
    vocab_size: int = 8000
    character_coverage: float = 1.0
    # Sentences sampled to train SentencePiece (0 = all); keeps big corpora fast.
    input_sentence_size: int = 0
    # The decoder's vocabulary: only the pieces that occur in the training targets (a joint
    # model's source-only pieces are dropped; about half of them on Multi30k de->en).
    prune_target_vocab: bool = True


@dataclass
class CorpusConfig:
    """A training corpus beside data.train_src/train_tgt, and how much of it an epoch
    sees: weight 2 = every pair twice, 0.5 = half of them, chosen anew each epoch."""

    src: str = MISSING
    tgt: str = MISSING
    weight: float = 1.0


@dataclass
class DataConfig:
    """Where the parallel text lives and how it is cut into batches."""

    name: str = MISSING
    src_lang: str = MISSING  # set by each data option (multi30k: de)
    tgt_lang: str = MISSING
    # Languages the files exist for; empty means any (users' own corpora).
    languages: List[str] = field(default_factory=list)
    train_src: str = MISSING
    train_tgt: str = MISSING
    valid_src: str = MISSING
    valid_tgt: str = MISSING
    # More training corpora, each with its weight in an epoch (data.train_* has 1):
    # data.corpora='[{src: crawl.de, tgt: crawl.en, weight: 0.5}]'
    corpora: List[CorpusConfig] = field(default_factory=list)
    test_src: Optional[str] = None
    test_tgt: Optional[str] = None
    # A SHA256SUMS file; the files it lists are verified on every load.
    checksums: Optional[str] = None
    # Token budget of one batch, padding included: batch size x longest sequence.
    max_tokens: int = 4096
    # Pairs with more subword tokens than this on either side are dropped from training.
    max_len: int = 100
    # Training pairs whose longer side has more than this times the tokens of the
    # shorter are dropped (misaligned lines); null keeps them.
    max_len_ratio: Optional[float] = None
    # Use only the first N pairs (quick experiments); null keeps them all.
    max_train_examples: Optional[int] = None
    max_valid_examples: Optional[int] = None
    # Where the tokenized corpus is written once and memory-mapped by every rank (see
    # dist_lstm/data/prepared.py); null: a folder of cache_dir named after the options.
    prepared_dir: Optional[str] = None
    # Where trained SentencePiece models (and prepared data) are cached.
    cache_dir: str = "${oc.env:DIST_LSTM_CACHE,'~/.cache/dist-lstm'}"
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)


@dataclass
class ModelConfig:
    """Encoder-decoder LSTM with attention."""

    emb_dim: int = 256
    # Encoder output size (both directions together) and decoder LSTM size.
    hidden_size: int = 512
    encoder_layers: int = 2
    decoder_layers: int = 2
    bidirectional: bool = True
    attention: str = "general"  # choices.py ATTENTIONS
    input_feeding: bool = True
    dropout: float = 0.3
    # Fraction of whole input tokens (source, and the target prefix fed back) dropped
    # while training: model/word_dropout.py.
    word_dropout: float = 0.0
    # Share the target embedding matrix with the output projection.
    tie_embeddings: bool = False


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule."""

    name: str = "adamw"  # choices.py OPTIMIZERS
    lr: float = 0.002
    weight_decay: float = 0.0
    betas: List[float] = field(default_factory=lambda: [0.9, 0.98])
    momentum: float = 0.0  # sgd only
    schedule: str = "inverse_sqrt"  # choices.py SCHEDULES
    warmup_steps: int = 500
    min_lr: float = 0.0  # cosine: the rate reached at trainer.max_steps
    plateau_factor: float = 0.5  # plateau: multiply the rate by this ...
    plateau_patience: int = 1  # ... after this many validations without improvement


@dataclass
class TrainerConfig:
    """The training loop: when to stop, validate and log."""

    max_steps: Optional[int] = None
    max_epochs: Optional[int] = 25
    # Wall-clock budget: seconds ("1800") or [[DD:]HH:]MM:SS ("00:30:00").
    max_time: Optional[str] = None
    accumulate_grad_batches: int = 1
    label_smoothing: float = 0.1
    # Validate every N optimizer steps; 0 validates at the end of every epoch.
    val_every_steps: int = 0
    log_every_steps: int = 50
    # Metric that picks the best checkpoint and drives early stopping / plateau.
    monitor: str = "val_bleu"  # choices.py MONITOR_MODES
    # Stop after this many validations without improvement of `monitor`; 0 disables.
    early_stopping_patience: int = 5
    # Decoding during validation: beam size (1 = greedy) and the output length limit
    # a * source_length + b tokens (also the default of `dist-lstm translate`).
    val_beam: int = 1
    decode_max_len_a: float = 1.5
    decode_max_len_b: int = 10
    device: str = "auto"  # choices.py DEVICES
    # fp32 products as TF32 on GPUs that have it (Ampere and later); no effect on CPUs.
    tf32: bool = True
    progress_bar: bool = True


@dataclass
class StrategyConfig:
    """How training is spread over processes (dist_lstm/strategy/); keys every strategy
    has. Each option of the group has its own schema below, so a DDP run carries no ZeRO
    stage and `strategy.zero_stage` under strategy=ddp fails naming the key."""

    name: str = MISSING  # each option's schema below sets its own (STRATEGY_SCHEMAS)
    # Numeric precision of training: 32, bf16 (autocast) or fp16 (autocast + loss
    # scaling; GPUs only). choices.py PRECISIONS.
    precision: str = "32"
    clip_grad_norm: float = 1.0  # gradient norm clipping; 0 disables it


@dataclass
class SingleStrategyConfig(StrategyConfig):
    name: str = "single"


@dataclass
class DistributedStrategyConfig(StrategyConfig):
    backend: str = "auto"  # choices.py BACKENDS: auto is nccl on GPUs, gloo on CPUs
    # A collective that waits longer than this fails the job instead of hanging it.
    timeout_s: int = 600


@dataclass
class DDPStrategyConfig(DistributedStrategyConfig):
    name: str = "ddp"
    find_unused_parameters: bool = False  # only for models with unused branches
    # How gradients cross the network (choices.py COMM_HOOKS): none (fp32),
    # fp16 or bf16 (half the bytes), powersgd (low-rank, with error feedback).
    comm_hook: str = "none"
    # PowerSGD's rank r: a gradient matrix is sent as an (n x r)(r x m) product. torch's
    # default; raise it by factors of 2 until quality matches comm_hook=none.
    powersgd_rank: int = 1
    # PowerSGD all-reduces in full until this step (torch's default): early steps set the
    # course and suffer most from compressed gradients. At least 2 (DDP rebuilds its
    # buckets after step 1); torch advises ~10% of the run and no less than the warm-up.
    powersgd_start_step: int = 1000
    # Size of DDP's gradient buckets (MiB); null: DDP's 25, the first bucket 1.
    bucket_cap_mb: Optional[float] = None


@dataclass
class AutoStrategyConfig(DDPStrategyConfig):
    """Single process when the launcher's WORLD_SIZE is unset or 1, DDP otherwise."""

    name: str = "auto"


@dataclass
class DeepSpeedStrategyConfig(DistributedStrategyConfig):
    name: str = "deepspeed"
    zero_stage: int = 1  # ZeRO stage 0-3 (see conf/strategy/deepspeed.yaml)


# The options of the `strategy` group by name, each named by its schema's `name` default:
# what validation offers, what conf/strategy/NAME.yaml starts from (NAME_schema) and what
# a worker types its config with. strategy/__init__.py STRATEGIES pairs each schema with
# its builder.
STRATEGY_SCHEMAS: Dict[str, Type[StrategyConfig]] = {
    schema.name: schema
    for schema in (
        AutoStrategyConfig,
        SingleStrategyConfig,
        DDPStrategyConfig,
        DeepSpeedStrategyConfig,
    )
}


@dataclass
class CheckpointConfig:
    """When checkpoints are written and how many stay; see dist_lstm/checkpoint/."""

    # Checkpoints are written after every validation and when training ends; also every
    # N optimizer steps when set.
    every_steps: Optional[int] = None
    # ... and every N minutes (by rank 0's clock), when set.
    every_minutes: Optional[float] = None
    # Newest checkpoints kept (plus the best); older ones are deleted after each save.
    keep_last: int = 3
    # Write in a background thread while training goes on (single/DDP): the state is
    # copied first; the folder is committed when writing ends; at most one in flight.
    async_save: bool = False


@dataclass
class WandbConfig:
    """Weights & Biases, from rank 0; see dist_lstm/logging/wandb.py."""

    # auto: online when W&B credentials are present (WANDB_API_KEY or `wandb login`),
    # otherwise offline (upload later with `wandb sync RUN_DIR/wandb/offline-run-*`).
    # A WANDB_MODE environment variable wins over this key.
    mode: str = "auto"  # choices.py WANDB_MODES
    project: str = "dist-lstm"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    name: Optional[str] = None  # default: the run directory's name


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class LauncherConfig:
    """Processes this job starts itself, without torchrun (see dist_lstm/jobs/spawn.py)."""

    # Above 1: run the job as this many local processes (DDP or DeepSpeed) through
    # torch.distributed's elastic launch API: `python train.py -m ... launcher.nproc_per_node=2`
    # makes every job of a sweep a distributed job. Leave at 1 under torchrun/srun.
    nproc_per_node: int = 1
    # Restarts of the whole worker group after a worker fails (resume=auto continues).
    max_restarts: int = 0


@dataclass
class Config:
    """The whole run. Group defaults come from conf/config.yaml."""

    seed: int = 1234
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    # null: start fresh; auto: continue from the newest complete checkpoint of the run
    # directory if there is one; or a checkpoint folder (RUN/checkpoints/step_00000500).
    resume: Optional[str] = None


def typed_config(values: Dict[str, Any]) -> DictConfig:
    """A composed config (as a plain container) typed again by the schema, with the
    strategy's own schema: what a worker process gets from the process that composed it."""
    schema = OmegaConf.structured(Config)
    schema.strategy = OmegaConf.structured(STRATEGY_SCHEMAS[values["strategy"]["name"]])
    return OmegaConf.merge(schema, values)


def register_configs() -> None:
    """Register the schema and resolvers (idempotent) before Hydra composes conf/."""
    for name, function in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    for name, schema in STRATEGY_SCHEMAS.items():  # conf/strategy/NAME.yaml starts from it
        store.store(group="strategy", name=f"{name}_schema", node=schema)
