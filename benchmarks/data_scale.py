"""Data at WMT scale: prepare once, then memory per rank and start-up time on prepared data.

    python benchmarks/data_scale.py                    # 4.5M pairs (WMT14 en-de size)
    python benchmarks/data_scale.py --pairs 1000000
    python benchmarks/data_scale.py --ranks 1 8        # memory per rank at 1 and 8 ranks
    python benchmarks/data_scale.py --smoke            # 3,000 pairs, 2 ranks, 6 steps, no file
    python benchmarks/data_scale.py --old-code DIR     # also the in-memory path of an
                                                       # older checkout DIR, at --old-pairs

Writes a deterministic synthetic corpus (two embedded Multi30k sentences joined per line,
~24 words a side, like WMT14's ~30 subwords), prepares it with `dist-lstm prepare` and
records: prepare wall time and pairs/s, disk bytes per token and per pair, seconds from
`python train.py` to the first optimizer step, peak RSS per rank at 1 and 2 ranks
(`--ranks`) with `model=tiny` (and the same runs on 30k pairs: their difference is the
data's memory), and the batches per second of the data loader alone against the steps
per second training consumed. Writes benchmarks/results/data_scale_<pairs>.json (committed).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import psutil
from results_file import write_result

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "dist_lstm" / "data" / "embedded" / "multi30k"
BASELINE_PAIRS = 30_000
PROJECTED_PAIRS = 40_000_000


def embedded(name: str) -> List[str]:
    with gzip.open(EMBEDDED / name, "rt", encoding="utf-8") as handle:
        return handle.read().splitlines()


def write_corpus(folder: Path, pairs: int, seed: int = 0) -> Dict[str, str]:
    """train.{de,en} of `pairs` lines, each two random embedded pairs joined; validation is
    Multi30k's own. Deterministic for a seed."""
    src, tgt = embedded("train.de.gz"), embedded("train.en.gz")
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.de", "w") as de, open(folder / "train.en", "w") as en:
        for start in range(0, pairs, 100_000):
            n = min(100_000, pairs - start)
            a = [rng.randrange(len(src)) for _ in range(n)]
            b = [rng.randrange(len(src)) for _ in range(n)]
            de.write("".join(f"{src[i]} {src[j]}\n" for i, j in zip(a, b)))
            en.write("".join(f"{tgt[i]} {tgt[j]}\n" for i, j in zip(a, b)))
    return {
        "data": "custom",
        "data.train_src": str(folder / "train.de"),
        "data.train_tgt": str(folder / "train.en"),
        "data.valid_src": str(EMBEDDED / "val.de.gz"),
        "data.valid_tgt": str(EMBEDDED / "val.en.gz"),
    }


def overrides_of(corpus: Dict[str, str], extra: List[str]) -> List[str]:
    return [f"{k}={v}" for k, v in corpus.items()] + extra


class PeakRss:
    """Peak resident memory of a process and each of its descendants, polled."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.peaks: Dict[int, int] = {}
        self.names: Dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                processes = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in processes:
                try:
                    rss = process.memory_info().rss
                    self.names.setdefault(process.pid, " ".join(process.cmdline()[:3]))
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                self.peaks[process.pid] = max(self.peaks.get(process.pid, 0), rss)
            time.sleep(0.05)

    def stop(self) -> Dict[int, int]:
        self._stop.set()
        self._thread.join()
        return self.peaks


def run_training(
    overrides: List[str],
    nproc: int,
    env: Dict[str, str],
    run_dir: Path,
    code: Path = ROOT,
    steps: int = 20,
) -> Dict[str, Any]:
    """`python train.py` for a few steps; seconds to the first optimizer step and the
    peak RSS of each rank (the worker processes at 2 ranks, the process itself at 1)."""
    args = [
        *overrides,
        "model=tiny",
        f"trainer.max_steps={steps}",
        "trainer.val_every_steps=1000",
        "trainer.log_every_steps=1",
        "trainer.progress_bar=false",
        f"hydra.run.dir={run_dir}",
    ]
    if nproc > 1:
        args += [f"launcher.nproc_per_node={nproc}", "strategy=ddp"]
    metrics = run_dir / "metrics.jsonl"
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "train.py", *args],
        cwd=code,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    memory = PeakRss(proc.pid)
    first_step: Optional[float] = None
    while proc.poll() is None:
        if first_step is None and metrics.is_file() and '"step": 1,' in metrics.read_text():
            first_step = time.monotonic() - started
        time.sleep(0.05)
    peaks = memory.stop()
    if proc.returncode != 0:
        raise SystemExit(f"training failed:\n{proc.stderr.read()[-3000:]}")
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    steps = [r for r in records if "step_time_s" in r and r["step"] > 2]
    workers = [rss for pid, rss in peaks.items() if pid != proc.pid] if nproc > 1 else []
    per_rank = workers[-nproc:] if workers else [peaks[proc.pid]]
    return {
        "seconds_to_first_step": round(first_step or float("nan"), 2),
        "peak_rss_mb_per_rank": [round(rss / 2**20) for rss in per_rank],
        "steps_per_sec": round(1 / (sum(r["step_time_s"] for r in steps) / len(steps)), 2),
    }


def loader_rate(overrides: List[str], batches: int) -> float:
    """Batches per second of the training DataLoader alone (prepared data, 1 process)."""
    sys.path.insert(0, str(ROOT))
    from bench_config import compose_config
    from omegaconf import OmegaConf

    from dist_lstm.data.build import build_data, make_train_loader

    cfg = compose_config(overrides)
    data = build_data(OmegaConf.to_object(cfg.data))
    loader = make_train_loader(data.train, cfg.data.max_tokens, cfg.seed)
    loader.batch_sampler.epoch_plan(0)  # planned before timing, as training does
    done, epoch, started = 0, 0, time.perf_counter()
    while done < batches:
        loader.batch_sampler.set_epoch(epoch)
        for _ in loader:
            done += 1
            if done == batches:
                break
        epoch += 1
    return batches / (time.perf_counter() - started)


def prepare(overrides: List[str], env: Dict[str, str]) -> Dict[str, Any]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "dist_lstm", "prepare", *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"prepare failed:\n{done.stderr[-3000:]}")
    folder = Path(done.stdout.strip().split(":")[0])
    manifest = json.loads((folder / "manifest.json").read_text())
    train = manifest["splits"]["train"]
    tokens = train["src_tokens"] + train["tgt_tokens"]
    train_bytes = sum(s for name, s in manifest["files"].items() if name.startswith("train"))
    token_bytes = sum(s for name, s in manifest["files"].items() if name.endswith(".bin"))
    return {
        "prepare_seconds": round(seconds, 1),
        "pairs_per_sec": round(train["read"] / seconds),
        "pairs_kept": train["pairs"],
        "tokens": tokens,
        "tokens_per_pair": round(tokens / train["pairs"], 1),
        "disk_bytes_per_token": round(train_bytes / tokens, 3),
        "disk_bytes_per_token_of_ids": round(token_bytes / tokens, 3),
        "dtype": manifest["dtype"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4_500_000)
    parser.add_argument(
        "--ranks", type=int, nargs="+", default=[1, 2], help="processes per training run"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="3,000 pairs, 2 ranks, 6 steps, vocabulary 1,000, no file",
    )
    parser.add_argument("--old-code", type=Path, help="a checkout with the in-memory path")
    parser.add_argument("--old-pairs", type=int, default=1_000_000)
    args = parser.parse_args()
    pairs = 3_000 if args.smoke else args.pairs
    baseline_pairs = 1_000 if args.smoke else BASELINE_PAIRS
    ranks = [2] if args.smoke else sorted(set(args.ranks))
    work = Path(tempfile.mkdtemp(prefix="data-scale-"))
    os.environ["DIST_LSTM_CACHE"] = str(work / "cache")  # also for the loader timed here
    env = {**os.environ, "WANDB_MODE": "disabled"}
    env.setdefault("OMP_NUM_THREADS", "1")
    tokenizer = [
        "data.max_valid_examples=64",  # prepared with the runs' own options: no re-prepare
        f"data.tokenizer.vocab_size={1000 if args.smoke else 8000}",
        f"data.tokenizer.input_sentence_size={min(200_000, 2 * pairs)}",
    ]
    report: Dict[str, Any] = {"pairs": pairs, "tokenizer": tokenizer}
    runs: Dict[str, Any] = {}
    for label, n in (("baseline", baseline_pairs), ("large", pairs)):
        corpus = overrides_of(write_corpus(work / label, n), tokenizer)
        report[f"prepare_{label}"] = prepare(corpus, env)
        for nproc in ranks:
            runs[f"{label}_{nproc}rank"] = run_training(
                corpus, nproc, env, work / f"run_{label}_{nproc}", steps=6 if args.smoke else 20
            )
        if label == "large":
            report["loader_batches_per_sec"] = round(
                loader_rate(corpus, 200 if args.smoke else 2000)
            )
    report["runs"] = runs
    large = report["prepare_large"]
    for nproc in ranks:
        extra = [
            a - b
            for a, b in zip(
                runs[f"large_{nproc}rank"]["peak_rss_mb_per_rank"],
                runs[f"baseline_{nproc}rank"]["peak_rss_mb_per_rank"],
            )
        ]
        report[f"data_memory_mb_per_rank_{nproc}rank"] = extra
    extra_mb = max(mb for n in ranks for mb in report[f"data_memory_mb_per_rank_{n}rank"])
    per_pair = extra_mb * 2**20 / max(pairs - baseline_pairs, 1)
    report["data_memory_bytes_per_pair"] = round(per_pair, 1)
    report["loader_vs_training"] = round(
        report["loader_batches_per_sec"] / runs[f"large_{ranks[0]}rank"]["steps_per_sec"], 1
    )
    report["projection_40M"] = {
        "prepare_minutes": round(PROJECTED_PAIRS / large["pairs_per_sec"] / 60, 1),
        "data_memory_mb_per_rank": round(per_pair * PROJECTED_PAIRS / 2**20),
        "disk_gb": round(
            PROJECTED_PAIRS * large["tokens_per_pair"] * large["disk_bytes_per_token"] / 1e9, 1
        ),
    }
    if args.old_code is not None:
        corpus = overrides_of(write_corpus(work / "old", args.old_pairs), tokenizer)
        report["old_in_memory_path"] = {
            "pairs": args.old_pairs,
            "code": str(args.old_code),
            **run_training(corpus, 1, env, work / "run_old", code=args.old_code),
        }
    write_result(f"data_scale_{pairs}", report, smoke=args.smoke)


if __name__ == "__main__":
    main()
