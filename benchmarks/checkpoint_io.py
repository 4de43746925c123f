"""Checkpoint cost: how long training stops for a save, synchronous vs asynchronous.

    python benchmarks/checkpoint_io.py                 # default model, AdamW state
    python benchmarks/checkpoint_io.py --experiment cpu_small
    python benchmarks/checkpoint_io.py --smoke         # tiny model, once, no file

Builds the configured model and optimizer (one optimizer step, so Adam's moments
exist), then writes the full training state through the single-process strategy the
trainer uses: a synchronous save, and an asynchronous one (the time `save_state`
blocks, then the time until the files are written), each the median of a few repeats,
plus a load. Writes benchmarks/results/checkpoint_io_<device>.json (committed).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_config import compose_config
from omegaconf import OmegaConf
from results_file import write_result

from dist_lstm.model import build_model
from dist_lstm.strategy.single import SingleDeviceStrategy
from dist_lstm.topology import from_environment
from dist_lstm.train.optim import build_optimizer


def trained_strategy(cfg) -> SingleDeviceStrategy:
    vocab = cfg.data.tokenizer.vocab_size
    strategy = SingleDeviceStrategy(from_environment("cpu"), OmegaConf.to_object(cfg.strategy))
    optim = OmegaConf.to_object(cfg.optim)
    strategy.wrap(build_model(cfg.model, vocab, vocab, 0), lambda m: build_optimizer(m, optim))
    src = torch.randint(4, vocab, (8, 12))
    tgt = torch.randint(4, vocab, (8, 13))
    logits = strategy.model(src, torch.full((8,), 12), tgt)
    strategy.backward(logits.float().logsumexp(-1).mean())
    strategy.step()
    return strategy


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", default=None, help="e.g. cpu_small (default: none)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="tiny model, one repeat, no file")
    args = parser.parse_args()
    if args.smoke:
        args.experiment, args.repeats = "smoke", 1
    cfg = compose_config([f"experiment={args.experiment}"] if args.experiment else [])
    strategy = trained_strategy(cfg)
    scratch = Path(tempfile.mkdtemp(prefix="checkpoint-io-"))
    sync_s, blocking_s, total_s, load_s = [], [], [], []
    try:
        for index in range(args.repeats):
            started = time.perf_counter()
            strategy.save_state(scratch / f"sync{index}")
            sync_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            future = strategy.save_state(scratch / f"async{index}", asynchronous=True)
            blocking_s.append(time.perf_counter() - started)
            future.result()
            total_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            strategy.load_state(scratch / f"sync{index}")
            load_s.append(time.perf_counter() - started)
        size = folder_bytes(scratch / "sync0")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    parameters = sum(p.numel() for p in strategy.unwrapped_model.parameters())
    report = {
        "model": f"experiment={args.experiment}" if args.experiment else "default config",
        "parameters": parameters,
        "state": "model + AdamW moments (DCP, one process)",
        "checkpoint_mb": round(size / 2**20, 1),
        "sync_save_s": round(statistics.median(sync_s), 3),
        "async_save_blocking_s": round(statistics.median(blocking_s), 3),
        "async_save_total_s": round(statistics.median(total_s), 3),
        "load_s": round(statistics.median(load_s), 3),
        "repeats": args.repeats,
        "device": "cpu",
    }
    write_result(f"checkpoint_io_{args.experiment or 'default'}_cpu", report, smoke=args.smoke)


if __name__ == "__main__":
    main()
