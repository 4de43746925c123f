"""`dist-lstm prepare`: a job's data phase ahead of the job. It composes the config from
train.py's overrides, as a job does, and tokenizes the corpus it names into the prepared
token files training maps (dist_lstm/data/prepared.py), unless they are there already."""

from __future__ import annotations

import argparse
import json


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "prepare",
        help="tokenize a corpus once into the token files training maps",
        description="Tokenize the corpus the config names (train.py's overrides: data=..., "
        "data.train_src=..., experiment=...) into prepared token files, unless they are "
        "there already. Training does this by itself when they are missing; run it ahead "
        "of a large job.",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, as for train.py")
    parser.add_argument(
        "--force", action="store_true", help="prepare again even if the files are up to date"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Hydra and the data code: imported when this command runs, not for the other commands
    from omegaconf import OmegaConf

    from dist_lstm.config import validate_config
    from dist_lstm.config.compose import compose_config
    from dist_lstm.data.build import verify_inputs
    from dist_lstm.data.prepared import ensure_prepared

    cfg = compose_config(args.overrides)
    validate_config(cfg)
    data = OmegaConf.to_object(cfg.data)  # the schema's DataConfig, as training builds it
    verify_inputs(data)
    directory = ensure_prepared(data, prepares=True, wait_s=None, force=args.force)
    manifest = json.loads((directory / "manifest.json").read_text())
    train = manifest["splits"]["train"]
    tokens = train["src_tokens"] + train["tgt_tokens"]
    data_bytes = sum(size for name, size in manifest["files"].items() if name.startswith("train"))
    print(
        f"{directory}: {train['pairs']:,} training pairs ({train['read']:,} read), "
        f"{tokens:,} tokens, {data_bytes / max(tokens, 1):.2f} bytes per token on disk "
        f"({manifest['dtype']}); `python train.py` with the same overrides uses it."
    )
    return 0
