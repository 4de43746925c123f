"""Translation speed: sentences/s and target tokens/s, greedy and beam 5, on test_2016_flickr.

    python benchmarks/quality.py --run-dir /tmp/cpu_small       # a trained model first
    python benchmarks/translate_speed.py --checkpoint /tmp/cpu_small
    python benchmarks/translate_speed.py --checkpoint RUN_DIR --smoke   # 64 sentences, no file
    python benchmarks/translate_speed.py --checkpoint RUN_DIR --precision bf16  # bf16 autocast

Decodes the 1,000 test sentences with each setting after one warm-up batch, three times
(the median pass is the figure), and writes
benchmarks/results/translate_speed_<device>.json (committed).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Optional

import torch
from results_file import write_result
from train_speed import gemm_gflops, onednn_gemm_gflops

from dist_lstm.config.choices import PRECISIONS
from dist_lstm.data.corpus import read_lines
from dist_lstm.translate.inference import SearchOptions, Translator, dataset_split_files, load_model


def measure(translator: Translator, sources: list[list[int]], repeats: int) -> dict:
    """The median of `repeats` passes over all sources: this shared machine's speed moves
    by 10-20% from one pass to the next."""
    translator.translate_ids(sources[:32])  # warm-up: allocator, oneDNN primitives
    passes = []
    for _ in range(repeats):
        started = time.perf_counter()
        outputs = translator.translate_ids(sources)
        passes.append(time.perf_counter() - started)
    seconds = statistics.median(passes)
    tokens = sum(len(o) + 1 for o in outputs)  # + EOS, as the decoder produced it
    return {
        "seconds": round(seconds, 2),
        "pass_seconds": [round(p, 2) for p in passes],
        "sentences_per_sec": round(len(sources) / seconds, 1),
        "target_tokens_per_sec": round(tokens / seconds, 1),
        "mean_output_tokens": round(tokens / len(sources), 2),
    }


def onednn_rate_on_cpu(device: str, seconds: float) -> Optional[float]:
    """oneDNN's fp32 2048^3 rate where search's products use it (a CPU with oneDNN)."""
    if torch.device(device).type != "cpu":
        return None
    rate = onednn_gemm_gflops(2048, 2048, 2048, seconds)
    return None if rate is None else round(rate, 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or run directory")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--repeats", type=int, default=3, help="passes; the median is kept")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="32",
        help="32, or bf16/fp16 autocast (as `dist-lstm translate --precision`)",
    )
    parser.add_argument("--label", help="names the result file: translate_speed_LABEL_<device>")
    parser.add_argument("--smoke", action="store_true", help="64 sentences, no file")
    args = parser.parse_args()

    loaded = load_model(args.checkpoint, args.device)
    src_path, _ = dataset_split_files(loaded.data_config, "test")
    sources = loaded.tokenizer.encode("src", read_lines(src_path))
    if args.smoke:
        sources, args.repeats = sources[:64], 1
    results = {}
    for beam in args.beams:
        options = SearchOptions(beam=beam, batch_size=args.batch_size, precision=args.precision)
        results["greedy" if beam == 1 else f"beam{beam}"] = measure(
            Translator(loaded, options), sources, args.repeats
        )
    report = {
        "checkpoint_model": loaded.config["model"],
        "sentences": len(sources),
        "batch_size": args.batch_size,
        "precision": args.precision,
        "device": str(args.device),
        "torch_threads": torch.get_num_threads(),
        # this machine's fp32 matmul rate in the same run: compare machines by ratios
        "gemm_gflops_2048": round(
            gemm_gflops(2048, 2048, 2048, torch.device(args.device), 0.2 if args.smoke else 2.0), 1
        ),
        # the model's CPU products run through oneDNN (dist_lstm/model/cpu/onednn_weights.py)
        "onednn_gemm_gflops_2048": onednn_rate_on_cpu(args.device, 0.2 if args.smoke else 2.0),
        "results": results,
    }
    label = f"{args.label}_" if args.label else ""
    label += "" if args.precision == "32" else f"{args.precision}_"
    write_result(
        f"translate_speed_{label}{torch.device(args.device).type}", report, smoke=args.smoke
    )


if __name__ == "__main__":
    main()
