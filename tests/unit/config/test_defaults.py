"""Every config default is written once, in the schema: no code below it repeats one as a
keyword default, a dataclass field or a `.get(key, fallback)`, where it would drift (the
schema clipped gradients at 1.0 while the strategies' signatures said 0.0)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from dist_lstm.config import schema

PACKAGE = Path(schema.__file__).resolve().parents[1]
# Groups whose keys code reads: a default of the same name below the schema repeats it.
# Left out: the top level (seed, resume), W&B's labels and a corpus's files, whose key
# names (name, group, tags, src, weight) are words any code uses for other things.
GROUPS = (
    schema.DataConfig,
    schema.TokenizerConfig,
    schema.ModelConfig,
    schema.OptimConfig,
    schema.TrainerConfig,
    schema.StrategyConfig,
    schema.DistributedStrategyConfig,
    schema.DDPStrategyConfig,
    schema.DeepSpeedStrategyConfig,
    schema.CheckpointConfig,
    schema.LauncherConfig,
)
# Choice selectors: checked against config/choices.py, and common parameter names.
GENERIC = {"name", "type"}
# Defaults that share a key's name but mean something else: (name, value) -> the modules
# (by file name, which survives a move between packages) that may have it, and why.
OTHER_MEANINGS: Dict[Tuple[str, object], Tuple[Set[str], str]] = {
    ("label_smoothing", 0.0): (
        {"loss", "decoder", "seq2seq"},
        "the loss's plain cross-entropy (validation's); training passes trainer.label_smoothing",
    ),
    ("word_dropout", 0.0): (
        {"encoder", "decoder"},
        "a layer built without it drops nothing; build_model passes model.word_dropout",
    ),
    ("device", "cpu"): (
        {"inference"},
        "where a checkpoint is loaded for translation when no device is given",
    ),
    ("precision", "32"): ({"inference"}, "translation's own --precision: full unless asked"),
}


def schema_keys() -> Set[str]:
    return {f.name for group in GROUPS for f in dataclasses.fields(group)} - GENERIC


def literal_defaults(tree: ast.AST) -> Iterator[Tuple[str, ast.expr]]:
    """(name, default) of every keyword default, dataclass-style field and
    `mapping.get("name", default)` fallback in `tree`."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            with_default = positional[len(positional) - len(args.defaults) :]
            yield from ((a.arg, d) for a, d in zip(with_default, args.defaults))
            keyword = zip(args.kwonlyargs, args.kw_defaults)
            yield from ((a.arg, d) for a, d in keyword if d is not None)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    if item.value is not None:
                        yield item.target.id, item.value
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and len(node.args) == 2
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, node.args[1]


def repeated_defaults(source: str, keys: Set[str], module: str = "") -> List[str]:
    """'name=value (line N)' for each literal default of a schema key in `source` (the
    file `module`.py) that OTHER_MEANINGS does not explain; None (no default) never counts."""
    found = []
    for name, default in literal_defaults(ast.parse(source)):
        if name not in keys or not isinstance(default, ast.Constant) or default.value is None:
            continue
        modules, _why = OTHER_MEANINGS.get((name, default.value), (set(), ""))
        if module not in modules:
            found.append(f"{name}={default.value!r} (line {default.lineno})")
    return found


def package_sources() -> Iterator[Path]:
    """Every module of the package but config/, where the schema is."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] != "config":
            yield path


def test_no_module_repeats_a_schema_default():
    keys = schema_keys()
    found = {
        str(path.relative_to(PACKAGE)): repeated
        for path in package_sources()
        if (repeated := repeated_defaults(path.read_text(), keys, path.stem))
    }
    assert not found, (
        f"defaults the schema owns, written again: {found}; take the value from the config "
        "object (or the schema's class attribute), or add the name to OTHER_MEANINGS with why"
    )


@pytest.mark.parametrize(
    "source",
    [
        "def step(norm, clip_grad_norm=0.0): ...",
        "def join(*, timeout_s: float = 600): ...",
        "class Options:\n    decode_max_len_b: int = 10",
        "limit = trainer.get('decode_max_len_a', 1.5)",
    ],
)
def test_the_scan_finds_a_repeated_or_contradicting_default(source):
    assert repeated_defaults(source, schema_keys())


@pytest.mark.parametrize(
    "source",
    [
        "def step(norm, clip_grad_norm: Optional[float] = None): ...",  # no default
        "def plot(width=1.5): ...",  # not a key
    ],
)
def test_the_scan_leaves_what_is_no_schema_default(source):
    assert not repeated_defaults(source, schema_keys(), "loss")


def test_another_meaning_is_allowed_only_in_the_modules_it_is_explained_for():
    source = "def loss(logits, label_smoothing=0.0): ..."
    assert not repeated_defaults(source, schema_keys(), "loss")
    assert repeated_defaults(source, schema_keys(), "trainer")
