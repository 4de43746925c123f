#!/usr/bin/env bash
# One command that checks the CUDA paths on a machine with a GPU, in under 8 minutes:
#   bash benchmarks/gpu_check.sh
# the CUDA tests (tests/gpu), smoke training in fp32/bf16/fp16 (single process, and
# DeepSpeed ZeRO-2 as one process), a resume, translate/evaluate on the GPU, and short
# train_speed/translate_speed runs. Writes benchmarks/results/gpu_check.json (and the
# speed scripts' own files). Without a GPU it says so and exits 0, running nothing else.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=benchmarks/results
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU on this machine (torch.cuda.is_available() is False): nothing to check."
    exit 0
fi
export OMP_NUM_THREADS=4 WANDB_MODE=disabled DIST_LSTM_CACHE=${DIST_LSTM_CACHE:-/tmp/dist-lstm-gpu-cache}
WORK=$(mktemp -d /tmp/gpu_check.XXXX)
LOG=$WORK/log.jsonl
: > "$LOG"

check() {  # check NAME TIMEOUT_S COMMAND...: run it, record status and seconds
    local name=$1 limit=$2
    shift 2
    local started=$(date +%s.%N)
    timeout "$limit" "$@" > "$WORK/$name.out" 2>&1
    local status=$?
    local seconds=$(python -c "import time; print(round(time.time() - $started, 1))")
    python - "$name" "$status" "$seconds" "$WORK/$name.out" >> "$LOG" <<'PY'
import json, sys
name, status, seconds, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
tail = open(out, errors="replace").read()[-1500:]
print(json.dumps({"check": name, "ok": status == 0, "status": status, "seconds": seconds, "tail": tail}))
PY
    echo "gpu_check: $name: $([ $status -eq 0 ] && echo ok || echo "FAILED ($status)") in ${seconds}s"
}

SMOKE="experiment=smoke trainer.progress_bar=false trainer.device=cuda trainer.max_steps=60"
check cuda_tests 240 env DIST_LSTM_TEST_CUDA=1 python -m pytest -q -n 0 -m cuda tests/gpu -s
for precision in 32 bf16 fp16; do
    check "train_$precision" 120 python train.py $SMOKE strategy.precision=$precision hydra.run.dir=$WORK/train_$precision
done
check train_zero2_one_process 150 python train.py $SMOKE strategy=deepspeed strategy.zero_stage=2 hydra.run.dir=$WORK/zero2
check resume 90 python train.py $SMOKE trainer.max_steps=90 resume=auto hydra.run.dir=$WORK/train_32
check translate 60 bash -c "echo 'Ein Hund läuft durch den Schnee.' | dist-lstm translate --checkpoint $WORK/train_32 --device cuda --beam 5"
check evaluate 60 dist-lstm evaluate --checkpoint "$WORK/train_32" --split test --device cuda --beam 5 --json
check train_speed 150 python benchmarks/train_speed.py --steps 60 --warmup 20 --breakdown-steps 10
check translate_speed 90 python benchmarks/translate_speed.py --checkpoint "$WORK/train_32" --repeats 1

python - "$LOG" "$OUT/gpu_check.json" <<'PY'
import json, sys, torch
checks = [json.loads(line) for line in open(sys.argv[1])]
report = {
    "gpu": torch.cuda.get_device_name(0),
    "capability": list(torch.cuda.get_device_capability(0)),
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "cudnn": torch.backends.cudnn.version(),
    "all_ok": all(c["ok"] for c in checks),
    "checks": checks,
}
open(sys.argv[2], "w").write(json.dumps(report, indent=2) + "\n")
print(f"gpu_check: {sum(c['ok'] for c in checks)}/{len(checks)} checks passed; {sys.argv[2]}")
sys.exit(0 if report["all_ok"] else 1)
PY
