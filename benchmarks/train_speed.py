"""Training speed of `experiment=bench_lstm512`: target tokens/s, model FLOPs utilisation,
peak memory and where a step's time goes.

    python benchmarks/train_speed.py              # about 8 minutes on 2 CPU cores
    python benchmarks/train_speed.py --steps 300 --warmup 100
    python benchmarks/train_speed.py --smoke      # seconds: checks the script still works
    python benchmarks/train_speed.py --precision bf16   # bf16 autocast (avx512_bf16 CPUs)

Three measurements in one run, so their ratios are comparable on any machine:
1. Throughput: `train.py` itself trains for `--steps` steps; its logged target tokens/s
   over the steady-state windows (after `--warmup` steps) are the figure. Peak resident
   memory: the training process's maximum RSS, and the peak sum over its whole process
   tree (W&B's offline service included; no data-loader workers are started).
2. The machine's fp32 GEMM rate, at 2048^3 and at the model's own GEMM shapes.
3. A step breakdown from an instrumented loop over the same parts (data, forward + loss,
   backward, optimizer), single process.
The model's FLOPs per target token are counted analytically from the config and the
batches' measured source/target lengths; MFU = tokens/s x FLOPs/token / GEMM rate.
Writes benchmarks/results/train_speed_<device>[_bf16].json (committed); --smoke writes
nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import psutil
import torch
from bench_config import compose_config
from results_file import write_result

from dist_lstm.precision import DTYPES, PRECISIONS

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ["experiment=smoke"]


def _sustained_gflops(product, flops: int, device: torch.device, seconds: float) -> float:
    for _ in range(3):
        product()
    if device.type == "cuda":  # the warm-up's kernels must not count in the timed part
        torch.cuda.synchronize()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        product()
        runs += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return flops * runs / (time.perf_counter() - start) / 1e9


def gemm_gflops(
    m: int,
    k: int,
    n: int,
    device: torch.device,
    seconds: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> float:
    """Sustained (m x k) @ (k x n) rate of torch.mm (MKL on CPU for fp32): in fp32 the
    rate the reference toolkit's figures were normalised by."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    return _sustained_gflops(lambda: a @ b, 2 * m * k * n, device, seconds)


def onednn_gemm_gflops(m: int, k: int, n: int, seconds: float = 1.0) -> Optional[float]:
    """Sustained fp32 rate of oneDNN on a weight reordered once, as search's CPU products
    run (dist_lstm/model/cpu/onednn_weights.py); None where this torch has no oneDNN."""
    from dist_lstm.model.cpu.onednn_weights import ONEDNN_LINEAR

    if not ONEDNN_LINEAR:
        return None
    x = torch.randn(m, k)
    weight = torch.ops.mkldnn._reorder_linear_weight(torch.randn(n, k))

    def product() -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")

    return _sustained_gflops(product, 2 * m * k * n, torch.device("cpu"), seconds)


def tf32_gemm_rates(
    device: torch.device, shapes: Dict[str, Tuple], seconds: float
) -> Optional[Dict[str, Dict[str, Optional[float]]]]:
    """fp32 GEMM rates with TF32 off and on, on a GPU that has TF32 (compute capability
    8.0+); None elsewhere. Leaves the TF32 switch as it found it."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 0):
        return None
    before = torch.backends.cuda.matmul.allow_tf32
    rates = {}
    try:
        for name, allowed in (("tf32_off", False), ("tf32_on", True)):
            torch.backends.cuda.matmul.allow_tf32 = allowed
            rates[name] = rates_at_shapes(
                lambda m, k, n: gemm_gflops(m, k, n, device, seconds), shapes
            )
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    return rates


def rates_at_shapes(
    measure: Callable[[int, int, int], Optional[float]], shapes: Dict[str, Tuple]
) -> Dict[str, Optional[float]]:
    """`measure(m, k, n)` at 2048^3 (the key "2048^3") and at each named model shape."""
    rates = {"2048^3": measure(2048, 2048, 2048)}
    for name, (m, k, n) in shapes.items():
        rates[f"{name} ({m}x{k})x({k}x{n})"] = measure(m, k, n)
    return rates


def mean_shape_rate(rates: Dict[str, float]) -> float:
    """The mean rate over the model's shapes (every entry after 2048^3)."""
    return statistics.mean(list(rates.values())[1:])


def model_gemm_shapes(model_cfg, vocab: int, batch: int, tgt_tokens: int) -> Dict[str, Tuple]:
    """The GEMMs that dominate a step: output projection over all target tokens, the
    decoder's per-step LSTM layers (input feeding: embedding + feed + hidden), the
    encoder's layers over a whole batch of source tokens."""
    h, e = model_cfg.hidden_size, model_cfg.emb_dim
    return {
        "output_projection": (tgt_tokens, h, vocab),
        "decoder_lstm_layer1": (batch, e + 2 * h, 4 * h),
        "decoder_lstm_layer2": (batch, 2 * h, 4 * h),
        "encoder_input_projection": (tgt_tokens, e, 2 * h),
    }


def flops_per_target_token(model_cfg, vocab: int, src_per_tgt: float, src_len: float) -> float:
    """Forward + backward (3x forward) FLOPs per target token, source side included.

    Per source token: each encoder layer and direction (4 gates, input + recurrent weights)
    and the attention keys. Per target token: decoder layers (input feeding adds H inputs
    to the first), attention scores and context over the source, the combine layer and the
    output projection. Embeddings, biases and element-wise ops are left out.
    """
    h, e, layers = model_cfg.hidden_size, model_cfg.emb_dim, model_cfg.encoder_layers
    directions = 2 if model_cfg.bidirectional else 1
    hd = h // directions
    encoder = 0.0
    for layer in range(layers):
        inputs = e if layer == 0 else h
        encoder += directions * 2 * 4 * hd * (inputs + hd)
    keys = 2 * h * h if model_cfg.attention == "general" else 0
    decoder = 0.0
    for layer in range(model_cfg.decoder_layers):
        inputs = (e + (h if model_cfg.input_feeding else 0)) if layer == 0 else h
        decoder += 2 * 4 * h * (inputs + h)
    attention = 2 * src_len * h * 2  # scores and context
    combine = 2 * (h + h) * h
    output = 2 * h * vocab
    forward = (encoder + keys) * src_per_tgt + decoder + attention + combine + output
    return 3 * forward


class TreeMemory(threading.Thread):
    """Peak summed RSS of a process and all its descendants (data-loader workers, W&B's
    service), sampled every 0.2 s: ru_maxrss only knows single processes."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.peak_mb = 0.0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.2):
            try:
                tree = [self.root, *self.root.children(recursive=True)]
                total = sum(p.memory_info().rss for p in tree if p.is_running())
            except psutil.Error:  # a process ended while being read
                continue
            self.peak_mb = max(self.peak_mb, total / 2**20)

    def stop(self) -> None:
        self._done.set()
        self.join()


def trainer_throughput(
    overrides: Sequence[str], steps: int, warmup: int, log_every: int
) -> Dict[str, float]:
    """Run train.py; tokens/s of the windows after `warmup`, and the process's peak RSS."""
    with tempfile.TemporaryDirectory() as run_dir:
        command = [
            sys.executable,
            "train.py",
            *overrides,
            f"trainer.max_steps={steps}",
            "trainer.max_epochs=null",
            "trainer.val_every_steps=0",
            f"trainer.log_every_steps={log_every}",
            "trainer.progress_bar=false",
            "logger.wandb.mode=offline",  # as users run it: W&B's service process included
            f"hydra.run.dir={run_dir}",
        ]
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
        tree = TreeMemory(proc.pid)
        tree.start()
        _, status, usage = os.wait4(proc.pid, 0)
        tree.stop()
        if status != 0:
            raise SystemExit(f"train.py failed (status {status}): {' '.join(command)}")
        records = [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").open()]
    windows = [r for r in records if "tokens_per_sec" in r and r["step"] > warmup]
    if not windows:
        raise SystemExit(f"no logging window after step {warmup}: raise --steps")
    return {
        "tokens_per_sec": statistics.median(r["tokens_per_sec"] for r in windows),
        "step_time_s": statistics.median(r["step_time_s"] for r in windows),
        "windows": len(windows),
        "peak_rss_mb": usage.ru_maxrss / 1024,  # the training process; KiB on Linux
        "peak_tree_rss_mb": tree.peak_mb,  # with every process it started, sampled
        # the run's own memory_mb: peak allocated CUDA memory on a GPU
        "peak_cuda_memory_mb": (
            max(r.get("memory_mb", 0.0) for r in windows) if torch.cuda.is_available() else None
        ),
    }


def step_breakdown(overrides: Sequence[str], steps: int) -> Dict[str, float]:
    """Seconds per step in each phase of an instrumented loop, and the batch shape."""
    from dist_lstm.batch import PAD_ID
    from dist_lstm.data.build import build_data, make_train_loader
    from dist_lstm.model import build_model
    from dist_lstm.strategy import build_strategy
    from dist_lstm.topology import from_environment
    from dist_lstm.train.optim import build_optimizer

    cfg = compose_config(list(overrides))
    torch.manual_seed(cfg.seed)
    data = build_data(cfg.data)
    topology = from_environment(cfg.trainer.device, env={})
    strategy = build_strategy(cfg.strategy, topology)
    model = build_model(
        cfg.model, data.tokenizer.src_vocab_size, data.tokenizer.tgt_vocab_size, PAD_ID
    )
    strategy.wrap(model, lambda m: build_optimizer(m, cfg.optim))
    loader = make_train_loader(data.train, cfg.data.max_tokens, cfg.seed, 0, 1)
    sync = torch.cuda.synchronize if strategy.device.type == "cuda" else (lambda: None)
    phases: Dict[str, List[float]] = {"data": [], "forward": [], "backward": [], "optimizer": []}
    shape = {"sentences": [], "src_tokens": [], "tgt_tokens": [], "src_len": []}
    batches = iter(loader)
    for step in range(steps + 2):  # the first 2 steps warm up allocators and caches
        t0 = time.perf_counter()
        batch = next(batches).to(strategy.device)
        sync()
        t1 = time.perf_counter()
        with strategy.micro_batch(sync_gradients=True):
            smoothing = cfg.trainer.label_smoothing
            loss_sum, tokens = strategy.model(  # as the Trainer calls it
                batch.src,
                batch.src_lengths,
                batch.tgt_in,
                batch.tgt_out,
                smoothing,
                batch.tgt_positions,
            )
            sync()
            t2 = time.perf_counter()
            strategy.backward(loss_sum / tokens)
            sync()
        t3 = time.perf_counter()
        strategy.step()
        sync()
        t4 = time.perf_counter()
        if step >= 2:
            for name, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                phases[name].append(seconds)
            shape["sentences"].append(batch.src.size(0))
            shape["src_tokens"].append(int(batch.src_lengths.sum()))
            shape["tgt_tokens"].append(tokens)
            shape["src_len"].append(float(batch.src_lengths.float().mean()))
    strategy.teardown()
    out = {f"{name}_s": statistics.mean(values) for name, values in phases.items()}
    out["total_s"] = sum(out.values())
    out["communication_s"] = 0.0  # one process; see benchmarks/scaling.py for all-reduce
    out.update({f"mean_{k}": statistics.mean(v) for k, v in shape.items()})
    out["tgt_vocab"] = data.tokenizer.tgt_vocab_size
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="train.py steps")
    parser.add_argument("--warmup", type=int, default=30, help="steps left out of tokens/s")
    parser.add_argument("--breakdown-steps", type=int, default=20)
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="32",
        help="strategy.precision: 32 (the reference's), or bf16 on CPUs with avx512_bf16",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny model, few steps, no file")
    args = parser.parse_args()
    overrides = ["experiment=bench_lstm512"]
    if args.smoke:
        overrides = SMOKE
        args.steps, args.warmup, args.breakdown_steps = 12, 4, 3
    overrides = [*overrides, f"strategy.precision={args.precision}"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    breakdown = step_breakdown(overrides, args.breakdown_steps)
    model_cfg = compose_config(overrides).model
    vocab = breakdown["tgt_vocab"]
    src_per_tgt = breakdown["mean_src_tokens"] / breakdown["mean_tgt_tokens"]
    flops = flops_per_target_token(model_cfg, vocab, src_per_tgt, breakdown["mean_src_len"])
    seconds = 0.2 if args.smoke else 2.0
    shapes = model_gemm_shapes(
        model_cfg, vocab, round(breakdown["mean_sentences"]), round(breakdown["mean_tgt_tokens"])
    )
    gemm = rates_at_shapes(lambda m, k, n: gemm_gflops(m, k, n, device, seconds), shapes)
    tf32 = tf32_gemm_rates(device, shapes, seconds)
    uses_onednn = device.type == "cpu" and onednn_gemm_gflops(8, 8, 8, 0.0) is not None
    onednn = (  # CPU only: search's oneDNN products do not run on a GPU
        rates_at_shapes(lambda m, k, n: onednn_gemm_gflops(m, k, n, seconds), shapes)
        if uses_onednn
        else None
    )

    log_every = 2 if args.smoke else 10
    throughput = trainer_throughput(overrides, args.steps, args.warmup, log_every)
    achieved = throughput["tokens_per_sec"] * flops / 1e9
    report = {
        "benchmark": "train_speed",
        "overrides": overrides,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "warmup_steps": args.warmup,
        **throughput,
        "model_gflop_per_target_token": flops / 1e9,
        "achieved_gflops": achieved,
        "gemm_gflops": gemm,
        "mfu_vs_2048_gemm": achieved / gemm["2048^3"],
        "mfu_vs_model_shape_gemm": achieved / mean_shape_rate(gemm),
        # oneDNN (which search uses, dist_lstm/model/cpu/onednn_weights.py) may multiply faster
        # than torch.mm on this machine: MFU against the faster library's rate too
        "onednn_gemm_gflops": onednn if uses_onednn else None,
        "mfu_vs_2048_onednn": achieved / onednn["2048^3"] if uses_onednn else None,
        "breakdown_per_step": breakdown,
        # GPUs: fp32 products with TF32 off and on (trainer.tf32), and peak device memory
        "gemm_gflops_tf32": tf32,
        "peak_cuda_memory_mb": throughput.get("peak_cuda_memory_mb"),
    }
    if args.precision != "32":  # MFU against the 16-bit rate the products ran at, too
        dtype = DTYPES[args.precision]
        low = rates_at_shapes(lambda m, k, n: gemm_gflops(m, k, n, device, seconds, dtype), shapes)
        report[f"gemm_gflops_{args.precision}"] = low
        report[f"mfu_vs_2048_gemm_{args.precision}"] = achieved / low["2048^3"]
        report[f"mfu_vs_model_shape_gemm_{args.precision}"] = achieved / mean_shape_rate(low)
    suffix = "" if args.precision == "32" else f"_{args.precision}"
    write_result(f"train_speed_{device.type}{suffix}", report, smoke=args.smoke)


if __name__ == "__main__":
    main()
