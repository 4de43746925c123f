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
2. The machine's GEMM rate, at 2048^3 and at the model's own GEMM shapes, in the precision
   the training's products run in: fp32 with TF32 as trainer.tf32 sets it on a GPU
   (step_breakdown configures it as train.py does; --tf32 off is strict fp32), or the
   16-bit dtype of --precision.
3. A step breakdown from an instrumented loop over the same parts (data, forward + loss,
   backward, optimizer), single process.
The model's FLOPs per target token are counted analytically from the config and the
batches' measured source/target lengths; MFU = tokens/s x FLOPs/token / GEMM rate. The
"mfu" block names its denominators: the measured GEMM in the products' precision, and on a
known GPU its rated dense peak in that precision (RATED_DENSE_TFLOPS).
--throughput-only measures 1. alone (gpu_check's extra precisions).
Writes benchmarks/results/train_speed_<device>[_bf16][_strict_fp32].json (committed);
--smoke writes nothing.
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
from omegaconf import OmegaConf
from results_file import write_result

from dist_lstm.config.choices import PRECISIONS
from dist_lstm.precision import DTYPES, configure_tf32

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
    """fp32 GEMM rates with TF32 off and on (matmul and cuDNN switches both), on a GPU
    that has TF32 (compute capability 8.0+); None elsewhere. Leaves the switches as it
    found them."""
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 0):
        return None
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    rates = {}
    try:
        for name, allowed in (("tf32_off", False), ("tf32_on", True)):
            configure_tf32(allowed, device)
            rates[name] = rates_at_shapes(
                lambda m, k, n: gemm_gflops(m, k, n, device, seconds), shapes
            )
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
    return rates


# Rated dense (no sparsity) tensor-core TFLOP/s by GPU part, from NVIDIA's datasheets:
# the denominator of MFU against the part's peak. fp16 runs at the bf16 rate. Matched on
# torch.cuda.get_device_name(): the first row whose words all appear in it (the PCIe and
# NVL parts before the SXM ones, whose names carry neither word).
RATED_DENSE_TFLOPS: Tuple[Tuple[Tuple[str, ...], str, Dict[str, float]], ...] = (
    (("H100", "NVL"), "H100 NVL", {"bf16": 835.0, "tf32": 418.0, "fp32": 60.0}),
    (("H100", "PCIE"), "H100 PCIe", {"bf16": 756.0, "tf32": 378.0, "fp32": 51.0}),
    (("H100",), "H100 SXM", {"bf16": 989.0, "tf32": 495.0, "fp32": 67.0}),
    (("H200", "NVL"), "H200 NVL", {"bf16": 835.0, "tf32": 418.0, "fp32": 60.0}),
    (("H200",), "H200", {"bf16": 989.0, "tf32": 495.0, "fp32": 67.0}),
    (("A100",), "A100", {"bf16": 312.0, "tf32": 156.0, "fp32": 19.5}),
)


def rated_peak(gpu_name: str) -> Optional[Tuple[str, Dict[str, float]]]:
    """(part, {precision: rated dense TFLOP/s}) of a GPU by its name; None if unknown."""
    upper = gpu_name.upper()
    for words, part, rates in RATED_DENSE_TFLOPS:
        if all(word in upper for word in words):
            return part, {**rates, "fp16": rates["bf16"]}
    return None


def product_precision(precision: str, tf32: bool) -> str:
    """What a step's matrix products run in: bf16/fp16 under autocast, else TF32 where
    training turned it on (trainer.tf32 on a GPU that has it), else fp32."""
    if precision != "32":
        return precision
    return "tf32" if tf32 else "fp32"


def mfu_figures(
    achieved_gflops: float, products: str, gemm_2048_gflops: float, gpu_name: Optional[str]
) -> Dict[str, object]:
    """MFU against the measured 2048^3 GEMM in the products' own precision and against
    the GPU's rated dense peak in that precision, each naming its denominator."""
    peak = rated_peak(gpu_name) if gpu_name else None
    return {
        "products": products,
        "achieved_tflops": achieved_gflops / 1e3,
        "vs_measured_gemm": {
            "denominator": f"measured 2048^3 GEMM, {products}",
            "tflops": gemm_2048_gflops / 1e3,
            "mfu": achieved_gflops / gemm_2048_gflops,
        },
        "vs_rated_peak": None
        if peak is None
        else {
            "denominator": f"{peak[0]} rated dense {products}",
            "gpu": gpu_name,
            "tflops": peak[1][products],
            "mfu": achieved_gflops / 1e3 / peak[1][products],
        },
    }


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
    data = build_data(OmegaConf.to_object(cfg.data))
    topology = from_environment(cfg.trainer.device, env={})
    tf32 = configure_tf32(cfg.trainer.tf32, topology.device)  # as train.py: run.py
    strategy = build_strategy(OmegaConf.to_object(cfg.strategy), topology)
    model = build_model(
        cfg.model, data.tokenizer.src_vocab_size, data.tokenizer.tgt_vocab_size, PAD_ID
    )
    optim = OmegaConf.to_object(cfg.optim)
    strategy.wrap(model, lambda m: build_optimizer(m, optim))
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
    out["tf32"] = tf32
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
    parser.add_argument(
        "--tf32",
        choices=("on", "off"),
        default="on",
        help="trainer.tf32 (GPUs of compute capability 8.0+): off is strict fp32",
    )
    parser.add_argument(
        "--gemm-seconds", type=float, default=2.0, help="timing of each GEMM rate (GPU: 0.25)"
    )
    parser.add_argument(
        "--throughput-only",
        action="store_true",
        help="train.py's tokens/s and memory only: no step breakdown, GEMM rates or MFU",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny model, few steps, no file")
    args = parser.parse_args()
    overrides = ["experiment=bench_lstm512"]
    if args.smoke:
        overrides = SMOKE
        args.steps, args.warmup, args.breakdown_steps, args.gemm_seconds = 12, 4, 3, 0.2
    overrides = [
        *overrides,
        f"strategy.precision={args.precision}",
        f"trainer.tf32={'true' if args.tf32 == 'on' else 'false'}",
    ]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    log_every = 2 if args.smoke else 10
    report: Dict[str, object] = {
        "benchmark": "train_speed",
        "overrides": overrides,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "steps": args.steps,
        "warmup_steps": args.warmup,
    }
    if not args.throughput_only:
        report.update(measure_mfu(overrides, args, device))
    throughput = trainer_throughput(overrides, args.steps, args.warmup, log_every)
    report.update(throughput)
    if not args.throughput_only:
        achieved = throughput["tokens_per_sec"] * report["model_gflop_per_target_token"]
        report.update(derived_mfu(report, achieved))
    suffix = "" if args.precision == "32" else f"_{args.precision}"
    suffix += "" if args.tf32 == "on" else "_strict_fp32"
    suffix += "_throughput" if args.throughput_only else ""
    write_result(f"train_speed_{device.type}{suffix}", report, smoke=args.smoke)


def measure_mfu(overrides: Sequence[str], args, device: torch.device) -> Dict[str, object]:
    """The step breakdown, the model's FLOPs per target token and the GEMM rates; the
    products' precision is the training's (step_breakdown configures TF32 as train.py)."""
    breakdown = step_breakdown(overrides, args.breakdown_steps)
    model_cfg = compose_config(list(overrides)).model
    vocab = breakdown["tgt_vocab"]
    src_per_tgt = breakdown["mean_src_tokens"] / breakdown["mean_tgt_tokens"]
    flops = flops_per_target_token(model_cfg, vocab, src_per_tgt, breakdown["mean_src_len"])
    seconds = args.gemm_seconds
    shapes = model_gemm_shapes(
        model_cfg, vocab, round(breakdown["mean_sentences"]), round(breakdown["mean_tgt_tokens"])
    )
    # fp32 products as training runs them: TF32 where step_breakdown turned it on
    gemm = rates_at_shapes(lambda m, k, n: gemm_gflops(m, k, n, device, seconds), shapes)
    products = product_precision(args.precision, breakdown["tf32"])
    out: Dict[str, object] = {
        "model_gflop_per_target_token": flops / 1e9,
        "breakdown_per_step": breakdown,
        "gemm_gflops": gemm,
        "gemm_products": product_precision("32", breakdown["tf32"]),
    }
    if args.precision != "32":  # the 16-bit rate the products ran at
        dtype = DTYPES[args.precision]
        out[f"gemm_gflops_{args.precision}"] = rates_at_shapes(
            lambda m, k, n: gemm_gflops(m, k, n, device, seconds, dtype), shapes
        )
    if device.type == "cuda" and not args.smoke:  # TF32 off and on, for comparison
        out["gemm_gflops_tf32"] = tf32_gemm_rates(device, shapes, seconds)
    uses_onednn = device.type == "cpu" and onednn_gemm_gflops(8, 8, 8, 0.0) is not None
    out["onednn_gemm_gflops"] = (  # CPU only: search's oneDNN products do not run on a GPU
        rates_at_shapes(lambda m, k, n: onednn_gemm_gflops(m, k, n, seconds), shapes)
        if uses_onednn
        else None
    )
    out["products"] = products
    return out


def derived_mfu(report: Dict[str, object], achieved: float) -> Dict[str, object]:
    """Achieved GFLOP/s over each denominator: MFU in the products' precision first."""
    gemm, products = report["gemm_gflops"], report["products"]
    own_gemm = report.get(f"gemm_gflops_{products}", gemm)  # bf16/fp16 runs: their rate
    onednn = report["onednn_gemm_gflops"]
    out: Dict[str, object] = {
        "achieved_gflops": achieved,
        "mfu": mfu_figures(achieved, products, own_gemm["2048^3"], report["gpu"]),
        # against the fp32 (TF32 as trained) GEMM: 2048^3 and the model's own shapes
        "mfu_vs_2048_gemm": achieved / gemm["2048^3"],
        "mfu_vs_model_shape_gemm": achieved / mean_shape_rate(gemm),
        # oneDNN (which search uses, dist_lstm/model/cpu/onednn_weights.py) may multiply faster
        # than torch.mm on this machine: MFU against the faster library's rate too
        "mfu_vs_2048_onednn": achieved / onednn["2048^3"] if onednn else None,
    }
    if products in ("bf16", "fp16"):
        out[f"mfu_vs_2048_gemm_{products}"] = achieved / own_gemm["2048^3"]
        out[f"mfu_vs_model_shape_gemm_{products}"] = achieved / mean_shape_rate(own_gemm)
    return out


if __name__ == "__main__":
    main()
