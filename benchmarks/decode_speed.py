"""Decoding speed of a model of the reference size, without a trained checkpoint: target
tokens/s, greedy and beam 5, with a fixed number of decoding steps.

    python benchmarks/decode_speed.py                 # bench_lstm512's model, 512 sentences
    python benchmarks/decode_speed.py --precision bf16
    python benchmarks/decode_speed.py --smoke         # the smoke model, seconds, no file

The model is bench_lstm512's (2-layer biLSTM 512 encoder, 2-layer decoder, 8k vocabulary)
with random weights, decoding random source sentences of Multi30k's lengths. Its output
limit is `--steps` tokens (max_len_a 0, max_len_b steps): random weights seldom choose
EOS, so nearly every sentence runs to the limit, as a briefly trained model does. How
many sentences finish early depends on the weights, so the figure is target tokens/s
(every token produced, EOS included), not sentences/s. Decoding goes through the
Translator (length-sorted batches, greedy refill) as `dist-lstm translate` does.
Writes benchmarks/results/decode_speed_<device>[_<precision>].json.
"""

from __future__ import annotations

import argparse
import time
from typing import Dict, List

import torch
from bench_config import compose_config
from omegaconf import OmegaConf
from results_file import write_result

from dist_lstm.batch import PAD_ID
from dist_lstm.config.choices import PRECISIONS
from dist_lstm.model import build_model
from dist_lstm.translate.inference import LoadedModel, SearchOptions, Translator

# Source lengths drawn uniformly from this range: Multi30k's BPE-8k sentences.
SOURCE_LENGTHS = (8, 30)


def random_sources(count: int, vocab: int, seed: int) -> List[List[int]]:
    """`count` sentences of random ids (special ids excluded), Multi30k-like lengths."""
    generator = torch.Generator().manual_seed(seed)
    low, high = SOURCE_LENGTHS
    lengths = torch.randint(low, high + 1, (count,), generator=generator)
    return [torch.randint(4, vocab, (int(n),), generator=generator).tolist() for n in lengths]


def decode_figures(translator: Translator, sources: List[List[int]], steps: int) -> Dict:
    """One timed pass after a warm-up batch; every output token counted, EOS included."""
    translator.translate_ids(sources[:32])  # warm-up: allocator, kernels, autotuning
    if translator.device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    outputs = translator.translate_ids(sources)
    if translator.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    tokens = sum(len(o) + 1 for o in outputs)  # + EOS, as translate_speed.py counts
    return {
        "seconds": round(seconds, 3),
        "target_tokens": tokens,
        "target_tokens_per_sec": round(tokens / seconds, 1),
        "sentences_at_the_limit": sum(len(o) >= steps for o in outputs),
        "longest_output": max(len(o) for o in outputs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", default="bench_lstm512")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sentences", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50, help="decoding steps per sentence")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--precision", choices=PRECISIONS, default="32")
    parser.add_argument("--smoke", action="store_true", help="smoke model, 48 sentences")
    args = parser.parse_args()
    if args.smoke:
        args.experiment, args.sentences, args.steps = "smoke", 48, 8

    cfg = compose_config([f"experiment={args.experiment}"])
    vocab = cfg.data.tokenizer.vocab_size  # joint or not, each side has this many pieces
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, vocab, vocab, PAD_ID).to(args.device).eval()
    config = OmegaConf.to_container(cfg, resolve=False)
    # no tokenizer: the Translator is given ids and returns ids
    loaded = LoadedModel(model=model, tokenizer=None, config=config, data_config={}, step=0,
                         path=None)  # fmt: skip
    sources = random_sources(args.sentences, vocab, cfg.seed)
    results = {}
    for beam in args.beams:
        options = SearchOptions(
            beam=beam,
            max_len_a=0.0,
            max_len_b=args.steps,
            batch_size=args.batch_size,
            precision=args.precision,
        )
        results["greedy" if beam == 1 else f"beam{beam}"] = decode_figures(
            Translator(loaded, options), sources, args.steps
        )
    report = {
        "benchmark": "decode_speed",
        "experiment": args.experiment,
        "model": config["model"],
        "vocab": vocab,
        "weights": "random (no trained checkpoint)",
        "sentences": len(sources),
        "decoding_steps": args.steps,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "device": str(args.device),
        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
        "results": results,
    }
    suffix = "" if args.precision == "32" else f"_{args.precision}"
    write_result(f"decode_speed_{torch.device(args.device).type}{suffix}", report, args.smoke)


if __name__ == "__main__":
    main()
