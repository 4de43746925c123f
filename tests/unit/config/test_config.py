"""The real conf/ tree: every shipped config composes and validates; bad values name their key."""

from pathlib import Path

import pytest

from dist_lstm.config import validate_config
from dist_lstm.config.compose import CONF_DIR, compose_config
from dist_lstm.config.durations import parse_duration
from dist_lstm.errors import ConfigError


def option_names(group):
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("experiment", option_names("experiment"))
def test_every_experiment_composes_and_validates(experiment):
    cfg = compose_config([f"experiment={experiment}"])
    validate_config(cfg)
    assert Path(cfg.data.train_src).is_file()


def header_train_overrides(experiment: str) -> list[str]:
    """The overrides of the `python train.py ...` command an experiment file's header shows."""
    lines = (CONF_DIR / "experiment" / f"{experiment}.yaml").read_text().splitlines()
    commands = [line.lstrip("# ").split() for line in lines if "python train.py" in line]
    assert commands, f"{experiment}.yaml: its header shows no `python train.py` command"
    return [word for word in commands[0][2:] if "=" in word and not word.startswith("hydra.")]


@pytest.mark.parametrize("experiment", option_names("experiment"))
def test_every_experiment_header_command_composes(experiment):
    overrides = header_train_overrides(experiment)
    assert f"experiment={experiment}" in overrides
    validate_config(compose_config(overrides))


@pytest.mark.parametrize("experiment", ["en_de", "fr_en", "en_fr"])
def test_pair_recipes_train_their_pair_to_convergence(experiment):
    src, tgt = experiment.split("_")
    cfg = compose_config([f"experiment={experiment}"])
    assert cfg.data.train_src.endswith(f"train.{src}.gz")
    assert cfg.data.test_tgt.endswith(f"test_2016_flickr.{tgt}.gz")
    assert cfg.trainer.max_time is None and cfg.trainer.early_stopping_patience > 0


@pytest.mark.parametrize("group", ["model", "optim", "trainer"])
def test_every_group_option_validates(group):
    for name in option_names(group):
        validate_config(compose_config([f"{group}={name}"]))


@pytest.mark.parametrize("pair", [("fr", "en"), ("en", "cs"), ("cs", "de")])
def test_language_pairs_select_files(pair):
    src, tgt = pair
    cfg = compose_config([f"data.src_lang={src}", f"data.tgt_lang={tgt}"])
    validate_config(cfg)
    assert cfg.data.train_src.endswith(f"train.{src}.gz")
    assert cfg.data.test_tgt.endswith(f"test_2016_flickr.{tgt}.gz")


def test_unknown_key_fails_naming_it():
    with pytest.raises(ConfigError, match="trainer.max_stepz"):
        compose_config(["trainer.max_stepz=5"])


def test_wrong_type_fails_naming_the_key():
    with pytest.raises(ConfigError, match="optim.lr"):
        compose_config(["optim.lr=fast"])


def test_custom_data_without_paths_names_missing_key():
    cfg = compose_config(["data=custom"])
    with pytest.raises(Exception, match="train_src"):
        _ = cfg.data.train_src


BAD_VALUES = [
    ("optim.lr=0", "optim.lr"),
    ("optim.lr=-0.1", "optim.lr"),
    ("optim.name=adam", "optim.name"),
    ("optim.schedule=linear", "optim.schedule"),
    ("data.max_tokens=50", "data.max_tokens"),
    ("data.src_lang=xx", "data.src_lang"),
    ("data.tgt_lang=de", "data.tgt_lang"),
    ("data.tokenizer.type=wordpiece", "data.tokenizer.type"),
    ("model.hidden_size=257", "model.hidden_size"),
    ("model.attention=cosine", "model.attention"),
    ("model.dropout=1.5", "model.dropout"),
    ("model.word_dropout=1.0", "model.word_dropout"),
    ("model.encoder_layers=0", "model.encoder_layers"),
    ("trainer.max_steps=0", "trainer.max_steps"),
    ("trainer.max_time=soon", "trainer.max_time"),
    ("trainer.monitor=val_acc", "trainer.monitor"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches"),
    ("trainer.device=tpu", "trainer.device"),
    ("seed=-1", "seed"),
]


@pytest.mark.parametrize("override,key", BAD_VALUES)
def test_invalid_values_name_their_key(override, key):
    cfg = compose_config([override])
    with pytest.raises(ConfigError, match=rf"^{key}="):
        validate_config(cfg)


POWERSGD = ["strategy=ddp", "strategy.comm_hook=powersgd"]


@pytest.mark.parametrize(
    "overrides,key,fix",
    [
        (["strategy=ddp", "strategy.comm_hook=int8"], "strategy.comm_hook", "none, fp16, bf16"),
        (["strategy=ddp", "strategy.bucket_cap_mb=0"], "strategy.bucket_cap_mb", "greater than 0"),
        ([*POWERSGD, "strategy.powersgd_rank=0"], "strategy.powersgd_rank", "1 or more"),
        ([*POWERSGD, "strategy.powersgd_start_step=1"], "strategy.powersgd_start_step", "2 or"),
        (
            [*POWERSGD, "trainer.max_steps=500"],
            "strategy.powersgd_start_step",
            "never compress in trainer.max_steps=500; set it below, e.g. 50",
        ),
        ([*POWERSGD, "strategy.precision=fp16"], "strategy.comm_hook", "precision=bf16 or 32"),
    ],
)
def test_bad_gradient_communication_settings_name_key_and_fix(overrides, key, fix):
    with pytest.raises(ConfigError, match=rf"^{key}=.*{fix}"):
        validate_config(compose_config(overrides))


def test_gradient_communication_keys_belong_to_ddp():
    """auto becomes DDP under a launcher, so it has them too; DeepSpeed has none of them."""
    validate_config(compose_config([*POWERSGD, "strategy.powersgd_start_step=20"]))
    validate_config(compose_config(["strategy.comm_hook=fp16", "strategy.bucket_cap_mb=4"]))
    with pytest.raises(ConfigError, match="strategy.comm_hook"):
        compose_config(["strategy=deepspeed", "strategy.comm_hook=fp16"])


def test_cosine_needs_max_steps_and_plateau_no_warmup():
    with pytest.raises(ConfigError, match="trainer.max_steps"):
        validate_config(compose_config(["optim.schedule=cosine"]))
    with pytest.raises(ConfigError, match="optim.warmup_steps"):
        validate_config(compose_config(["optim.schedule=plateau", "optim.warmup_steps=10"]))


def test_no_stopping_criterion_is_an_error():
    cfg = compose_config(["trainer.max_epochs=null"])
    with pytest.raises(ConfigError, match="at least one of"):
        validate_config(cfg)


@pytest.mark.parametrize(
    "text,seconds", [("90", 90), ("01:30", 90), ("00:30:00", 1800), ("1:00:00:00", 86400)]
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "old, new",
    [
        ("trainer.precision=bf16", "strategy.precision=bf16"),
        ("optim.clip_grad_norm=5.0", "strategy.clip_grad_norm=5.0"),
    ],
)
def test_a_moved_key_stops_with_the_new_key(old, new):
    """Before Hydra composes: the schema has no field for the old key."""
    with pytest.raises(ConfigError, match=f"has moved to .*set {new} instead of {old}"):
        compose_config([old])


def test_each_strategy_has_only_its_own_keys():
    cfg = compose_config(["strategy=deepspeed", "strategy.zero_stage=3"])
    assert cfg.strategy.zero_stage == 3 and "find_unused_parameters" not in cfg.strategy
    assert "zero_stage" not in compose_config(["strategy=ddp"]).strategy
    assert "backend" not in compose_config(["strategy=single"]).strategy
    with pytest.raises(ConfigError, match="strategy.zero_stage"):
        compose_config(["strategy=ddp", "strategy.zero_stage=2"])


def schema_default(node, path):
    for key in path:
        node = getattr(node, key)
    return node


@pytest.mark.parametrize(
    "group", ["data", "model", "optim", "trainer", "strategy", "checkpoint", "logger", "launcher"]
)
def test_group_files_set_no_key_to_the_schema_default(group):
    """Defaults are written once, in the schema: a group file repeating one would drift."""
    from omegaconf import OmegaConf

    from dist_lstm.config.schema import Config

    schema = OmegaConf.structured(Config)
    for path in (CONF_DIR / group).glob("*.yaml"):
        values = OmegaConf.load(path)
        package = [] if "@package _global_" in path.read_text() else [group]
        flat = OmegaConf.to_container(values)
        flat.pop("defaults", None)
        stack = [(package, flat)]
        while stack:
            prefix, mapping = stack.pop()
            for key, value in mapping.items():
                if isinstance(value, dict):
                    stack.append(([*prefix, key], value))
                elif not isinstance(value, str) or "${" not in value:
                    default = OmegaConf.select(schema, ".".join([*prefix, key]))
                    assert value != default or key == "name", (
                        f"{path.name}: {'.'.join([*prefix, key])}={value} repeats the default"
                    )


@pytest.mark.parametrize(
    "group", ["data", "model", "optim", "trainer", "strategy", "checkpoint", "logger", "launcher"]
)
def test_group_files_set_only_keys_of_their_own_group(group):
    """A group file that sets another group's key (optim/sgd.yaml once set
    strategy.clip_grad_norm) wins or loses by the order of the defaults list; bundles of
    several groups' keys are experiments."""
    for path in (CONF_DIR / group).glob("*.yaml"):
        assert "@package" not in path.read_text(), f"{path.name} sets keys outside `{group}`"


def test_validation_offers_the_config_choices_and_the_registries_implement_each():
    from dist_lstm.config.choices import OPTIMIZERS
    from dist_lstm.config.schema import STRATEGY_SCHEMAS
    from dist_lstm.train.optim import OPTIMIZER_BUILDERS

    assert tuple(OPTIMIZER_BUILDERS) == OPTIMIZERS
    with pytest.raises(ConfigError, match="choose one of " + ", ".join(OPTIMIZERS)):
        validate_config(compose_config(["optim.name=adam"]))
    with pytest.raises(ConfigError, match="choose one of " + ", ".join(STRATEGY_SCHEMAS)):
        validate_config(compose_config(["strategy.name=fsdp"]))


def test_a_registry_out_of_step_with_the_choices_fails_at_import():
    from dist_lstm.config.choices import registry

    assert list(registry("optim.name", ("b", "a"), {"a": 1, "b": 2})) == ["b", "a"]
    with pytest.raises(RuntimeError, match="optim.name: config/choices.py offers a, b but"):
        registry("optim.name", ("a", "b"), {"a": 1})


@pytest.mark.parametrize("strategy", ["auto", "single", "ddp", "deepspeed"])
def test_a_worker_types_the_composed_config_again_with_its_strategy_schema(strategy):
    """launcher.nproc_per_node workers rebuild the config from a plain container."""
    from omegaconf import OmegaConf

    from dist_lstm.config.schema import STRATEGY_SCHEMAS, typed_config

    composed = compose_config([f"strategy={strategy}"])
    typed = typed_config(OmegaConf.to_container(composed, resolve=False))
    assert OmegaConf.get_type(typed.strategy) is STRATEGY_SCHEMAS[strategy]
    assert typed == composed


def test_a_corpus_weight_of_zero_names_the_corpus():
    corpora = "[{src: a.de, tgt: a.en, weight: 0}]"
    with pytest.raises(ConfigError, match=r"data.corpora\[0\].weight=0.*leave a corpus out"):
        validate_config(compose_config([f"data.corpora={corpora}"]))
