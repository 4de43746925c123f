"""Data configs for tests that change one data option at a time (data/shaping.py's keys).

Built from the schema's DataConfig, so a key added to it (or to TokenizerConfig) is
changed by the parametrized tests without editing them.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

from omegaconf import OmegaConf

from dist_lstm.config.schema import DataConfig
from dist_lstm.data.shaping import option_values

PREFIX = "data."


def data_options(corpora: int = 0) -> Dict[str, Any]:
    """The schema's data defaults, resolved, with its required keys set and `corpora`
    extra corpora (weights 1.0, 0.5, ...)."""
    data = OmegaConf.to_container(OmegaConf.structured(DataConfig), resolve=True)
    data.update(name="test", src_lang="de", tgt_lang="en")
    data.update(
        {
            f"{split}_{side}": f"/corpus/{split}.{side}"
            for split in ("train", "valid")
            for side in ("src", "tgt")
        }
    )
    data["corpora"] = [
        {"src": f"/corpus/extra{i}.src", "tgt": f"/corpus/extra{i}.tgt", "weight": 1.0 / (i + 1)}
        for i in range(corpora)
    ]
    return data


def data_config(values: Mapping[str, Any]) -> DataConfig:
    """`values` (a data group as a plain mapping) as the schema's DataConfig: what
    preparation takes, typed as a run's composed config is."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), values))


def concrete_keys(keys: Sequence[str]) -> List[str]:
    """Every "data.KEY" that `keys` (an owner's list) spells out, with one extra corpus."""
    return list(option_values(data_options(corpora=1), keys))


def value_at(data: Mapping[str, Any], key: str) -> Any:
    return OmegaConf.select(OmegaConf.create(dict(data)), key[len(PREFIX) :])


def another_value(data: Mapping[str, Any], key: str) -> Any:
    """A value of `key` other than the one `data` has, of a type the key takes."""
    value = value_at(data, key)
    if value is None:
        return 3  # the optional keys (limits, ratios) all take a number
    if isinstance(value, list):
        return [*value, "other"]
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    return f"{value}.other"


def with_value(data: Mapping[str, Any], key: str, value: Any) -> Dict[str, Any]:
    """A copy of `data` with "data.KEY" set to `value`."""
    config = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(dict(data))))
    OmegaConf.update(config, key[len(PREFIX) :], value, merge=False)
    return OmegaConf.to_container(config)
