"""DDP on CPU with gloo: 2 processes under torchrun, as users launch them."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from dist_lstm.checkpoint import load_checkpoint
from tests.conftest import ROOT, write_lines

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="torchrun + gloo on POSIX")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


def torchrun(*overrides, nproc=2):
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{free_port()}",
        "train.py",
        *overrides,
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(2)
    overrides = []
    for split, n in (("train", 600), ("valid", 30)):
        src = [" ".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 9))) for _ in range(n)]
        overrides.append(f"data.{split}_src={write_lines(root / f'{split}.src', src)}")
        overrides.append(
            f"data.{split}_tgt={write_lines(root / f'{split}.tgt', [s[::-1] for s in src])}"
        )
    return [
        "data=custom",
        *overrides,
        "data.tokenizer.vocab_size=16",
        "data.max_tokens=160",
        "data.max_len=20",
        "model=tiny",
        "model.dropout=0.0",
        "optim.warmup_steps=0",
        "optim.schedule=constant",
        "trainer.max_epochs=null",
        "trainer.progress_bar=false",
        "trainer.log_every_steps=1",
        "trainer.early_stopping_patience=0",
    ]


def last_params(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "last")["model"]


def train_losses(run_dir):
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def test_two_ranks_match_one_process_with_accumulation(corpus, tmp_path):
    """Rank r takes every other batch; DDP averages two ranks' gradients. One process
    accumulating the same two batches per step must land on the same parameters."""
    steps = ["trainer.max_steps=8", "trainer.val_every_steps=8"]
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    run(
        [
            sys.executable,
            "train.py",
            *corpus,
            *steps,
            "trainer.accumulate_grad_batches=2",
            f"hydra.run.dir={single}",
        ]
    )
    run(torchrun(*corpus, *steps, "strategy=ddp", f"hydra.run.dir={ddp}"))
    a, b = last_params(single), last_params(ddp)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
    assert train_losses(single) == pytest.approx(train_losses(ddp), rel=1e-4)
    assert (ddp / "train.rank1.log").is_file()


def test_torchrun_ranks_share_the_default_run_dir(corpus, tmp_path):
    """Without hydra.run.dir, all ranks adopt rank 0's timestamped directory; training
    runs several epochs (every rank the same number of steps) and validates each one."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    for name in ("train.py", "conf"):
        (workdir / name).symlink_to(ROOT / name)
    args = torchrun(*corpus, "trainer.max_epochs=3", "trainer.val_every_steps=0")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run_dirs = [p.parent for p in (workdir / "outputs").glob("*/*/metrics.jsonl")]
    assert len(run_dirs) == 1, list((workdir / "outputs").rglob("*"))
    run_dir = run_dirs[0]
    assert {p.name for p in run_dir.glob("train*.log")} == {"train.log", "train.rank1.log"}
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "val_bleu" in r] == [1, 2, 3]
    assert "DDPStrategy on cpu, world size 2" in (run_dir / "train.log").read_text()


@pytest.fixture(scope="module")
def ddp_reference(corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ddp_reference")
    run(torchrun(*corpus, *DS_STEPS, "strategy=ddp", f"hydra.run.dir={run_dir}"))
    return run_dir


DS_STEPS = ["trainer.max_steps=6", "trainer.val_every_steps=6", "trainer.accumulate_grad_batches=2"]


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_deepspeed_zero_tracks_ddp(corpus, ddp_reference, tmp_path, stage):
    """Same data, same steps (with gradient accumulation): ZeRO's losses and final weights
    follow DDP's."""
    run_dir = tmp_path / f"zero{stage}"
    run(
        torchrun(
            *corpus,
            *DS_STEPS,
            "strategy=deepspeed",
            f"strategy.zero_stage={stage}",
            f"hydra.run.dir={run_dir}",
        )
    )
    assert train_losses(run_dir) == pytest.approx(train_losses(ddp_reference), rel=1e-3)
    reference, zero = last_params(ddp_reference), last_params(run_dir)
    assert zero.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(zero[name], reference[name], rtol=1e-3, atol=1e-4, msg=name)


def test_a_failing_rank_ends_the_job_quickly_and_names_itself(corpus, tmp_path):
    args = torchrun(
        *corpus,
        "trainer.max_steps=200",
        "strategy.timeout_s=120",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    args[args.index("train.py")] = str(ROOT / "tests" / "helpers" / "failing_train.py")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "FAIL_RANK": "1",
        "FAIL_STEP": "3",
        "PYTHONPATH": str(ROOT),
    }
    started = time.monotonic()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=200)
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert elapsed < 90, f"the job took {elapsed:.0f} s to stop"
    output = proc.stdout + proc.stderr
    assert "rank 1 of 2 failed" in output and "injected failure for the test" in output


def test_two_nodes_on_loopback_match_one_node(corpus, ddp_reference, tmp_path):
    """Two torchrun 'nodes' (one process each) meet through c10d rendezvous on loopback
    and train exactly like one node with two processes."""
    port, run_dir = free_port(), tmp_path / "two_nodes"
    node = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{port}",
        "--rdzv_id=loopback",
        "train.py",
        *corpus,
        *DS_STEPS,
        "strategy=ddp",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            node, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    reference, two_nodes = last_params(ddp_reference), last_params(run_dir)
    for name in reference:
        torch.testing.assert_close(two_nodes[name], reference[name], rtol=0, atol=0, msg=name)


def test_sbatch_template_runs_with_stand_in_slurm_commands(corpus, tmp_path):
    """launch/slurm/train.sbatch as SLURM would run it on one node, with srun and scontrol
    replaced by stand-ins: the torchrun command line it builds must train."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho 127.0.0.1\n")
    # srun runs its command once (one node), dropping its own options.
    (bin_dir / "srun").write_text(
        '#!/bin/bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    run_dir = tmp_path / "slurm-run"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
        "SLURM_JOB_ID": "4242",
        "SLURM_NNODES": "1",
        "SLURM_JOB_NODELIST": "node1",
        "GPUS_PER_NODE": "2",
        "RDZV_PORT": str(free_port()),
        "RUN_DIR": str(run_dir),
    }
    proc = subprocess.run(
        [
            "bash",
            "launch/slurm/train.sbatch",
            *corpus,
            "trainer.max_steps=2",
            "trainer.val_every_steps=2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "DDPStrategy on cpu, world size 2" in (run_dir / "train.log").read_text()


@pytest.mark.parametrize(
    "strategy",
    [
        ["strategy=ddp", "trainer.accumulate_grad_batches=2"],
        ["strategy=deepspeed", "strategy.zero_stage=2", "trainer.accumulate_grad_batches=2"],
    ],
)
def test_bf16_trains_under_ddp_and_deepspeed(corpus, tmp_path, strategy):
    from tests.unit.test_precision import bf16_supported

    if not bf16_supported():
        pytest.skip("this CPU has no bf16 support")
    run_dir = tmp_path / "bf16"
    run(
        torchrun(
            *corpus,
            *strategy,
            "trainer.precision=bf16",
            "trainer.max_steps=4",
            "trainer.val_every_steps=4",
            f"hydra.run.dir={run_dir}",
        )
    )
    losses = train_losses(run_dir)
    assert len(losses) == 4 and all(0 < loss < 10 for loss in losses)
    assert last_params(run_dir)["decoder.output.weight"].dtype == torch.float32


def test_ctrl_c_ends_every_rank(corpus, tmp_path):
    run_dir = tmp_path / "interrupted"
    args = torchrun(*corpus, "trainer.max_steps=100000", f"hydra.run.dir={run_dir}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) != 0
    leftover = subprocess.run(["pgrep", "-f", f"hydra.run.dir={run_dir}"], capture_output=True)
    assert leftover.stdout == b"", "worker processes survived Ctrl-C"


def test_deepspeed_launcher_runs_train_py(corpus, tmp_path):
    """`deepspeed --num_gpus 2 train.py ...`: it appends --local_rank=N, which is dropped."""
    run_dir = tmp_path / "ds_launcher"
    launcher = [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        "--num_gpus",
        "2",
        "--master_port",
        str(free_port()),
    ]
    run(
        [
            *launcher,
            "train.py",
            *corpus,
            "strategy=deepspeed",
            "trainer.max_steps=2",
            "trainer.val_every_steps=2",
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert len(train_losses(run_dir)) == 2
    assert "DeepSpeedStrategy on cpu, world size 2" in (run_dir / "train.log").read_text()
