"""DDP on CPU with gloo: 2 processes under torchrun, as users launch them."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from dist_lstm.checkpoint import load_checkpoint, read_meta
from dist_lstm.checkpoint.manager import step_name
from dist_lstm.config.compose import compose_config
from dist_lstm.topology import free_local_port
from dist_lstm.train.run import train
from tests.helpers.configs import DISTRIBUTED_RUN
from tests.helpers.corpus import TRAIN_PAIRS
from tests.helpers.hardware import needs_bf16
from tests.helpers.launch import run, torchrun
from tests.helpers.paths import ROOT
from tests.helpers.runs import last_params, logged, train_losses

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="torchrun + gloo on POSIX")


HELPERS = ROOT / "tests" / "helpers"  # train.py with a fault injected or a record kept


def said(proc):
    """A command's output with the console's line wrapping undone."""
    return " ".join((proc.stdout + proc.stderr).split())


def start_training(args, run_dir, env=None, output=None):
    """Start a long training command and return its process once the first step is
    logged (so a signal meets training, not start-up); `output`: a file for its console."""
    env = env or {**os.environ, "OMP_NUM_THREADS": "1"}
    console = output.open("w") if output else subprocess.DEVNULL
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=console, stderr=subprocess.STDOUT)
    if output:
        console.close()  # the child holds its own copy
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120  # a failure guard only: the wait ends on the file
    while not (metrics.exists() and metrics.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert proc.poll() is None, "training ended before it could be signalled"
    assert metrics.exists() and metrics.read_text().strip(), "no step logged within 120 s"
    return proc


def stopped_with_a_checkpoint(run_dir, signal_name, ranks):
    """The step a run stopped by `signal_name` reached, after checking what the README
    promises there: `last` is that step's folder, COMPLETE, with every rank's part, and
    the log names the signal and the step."""
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    step = records[-1]["step"]  # the step reached (log_every_steps=1)
    last = (run_dir / "checkpoints" / "last").resolve()
    assert last.name == step_name(step) and (last / "COMPLETE").is_file()
    assert len(list((last / "rank").iterdir())) == ranks
    assert torch.load(last / "trainer.pt")["trainer"]["step"] == step
    assert f"stopped by {signal_name} at step {step}" in (run_dir / "train.log").read_text()
    return step


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
            *DISTRIBUTED_RUN,
            *steps,
            "trainer.accumulate_grad_batches=2",
            f"hydra.run.dir={single}",
        ]
    )
    run(torchrun(*corpus, *DISTRIBUTED_RUN, *steps, "strategy=ddp", f"hydra.run.dir={ddp}"))
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
    args = torchrun(*corpus, *DISTRIBUTED_RUN, "trainer.max_epochs=3", "trainer.val_every_steps=0")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run_dirs = [p.parent for p in (workdir / "outputs").glob("*/*/metrics.jsonl")]
    assert len(run_dirs) == 1, list((workdir / "outputs").rglob("*"))
    run_dir = run_dirs[0]
    assert {p.name for p in run_dir.glob("train*.log")} == {"train.log", "train.rank1.log"}
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in records if "val_bleu" in r]
    assert [r["epoch"] for r in validations] == [1, 2, 3]
    assert "DDPStrategy on cpu, world size 2" in (run_dir / "train.log").read_text()
    # Each rank validated half of the sentences; gathered in order, their scores are those
    # of one process translating the whole split with the same checkpoint.
    last = run_dir / "checkpoints" / "last"
    evaluate = [sys.executable, "-m", "dist_lstm", "evaluate", "--checkpoint", str(last)]
    report = json.loads(run([*evaluate, "--split", "valid", "--beam", "1", "--json"]).stdout)
    assert report["sentences"] == 30 and report["bleu"] > 0
    assert (report["bleu"], report["chrf"]) == pytest.approx(
        (validations[-1]["val_bleu"], validations[-1]["val_chrf"])
    )


@pytest.fixture(scope="module")
def ddp_reference(corpus, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ddp_reference")
    run(torchrun(*corpus, *DISTRIBUTED_RUN, *DS_STEPS, "strategy=ddp", f"hydra.run.dir={run_dir}"))
    return run_dir


DS_STEPS = ["trainer.max_steps=6", "trainer.val_every_steps=6", "trainer.accumulate_grad_batches=2"]


def test_deepspeed_zero1_tracks_ddp(corpus, ddp_reference, tmp_path):
    """Same data, same steps (with gradient accumulation): ZeRO's losses and final weights
    follow DDP's. Stages 2 and 3 are held to the same reference across a resume, below."""
    run_dir = tmp_path / "zero1"
    run(
        torchrun(
            *corpus,
            *DISTRIBUTED_RUN,
            *DS_STEPS,
            "strategy=deepspeed",
            "strategy.zero_stage=1",
            f"hydra.run.dir={run_dir}",
        )
    )
    assert train_losses(run_dir) == pytest.approx(train_losses(ddp_reference), rel=1e-3)
    reference, zero = last_params(ddp_reference), last_params(run_dir)
    assert zero.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(zero[name], reference[name], rtol=1e-3, atol=1e-4, msg=name)


def test_a_failing_rank_ends_the_job_and_names_itself(corpus, tmp_path):
    """The failing rank's error ends the job, not a collective time-out: the time-out is
    set far above this test's own, so a job left waiting would fail the test by timing
    out instead of passing."""
    args = torchrun(
        *corpus,
        *DISTRIBUTED_RUN,
        "trainer.max_steps=200",
        "strategy.timeout_s=3600",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    args[args.index("train.py")] = str(HELPERS / "failing_train.py")
    proc = run(args, status=1, FAIL_RANK="1", FAIL_STEP="3")
    output = said(proc)
    assert "rank 1 of 2 failed" in output and "injected failure for the test" in output
    for waited in ("timeout", "timed out", "collective"):
        assert waited not in output.lower(), output[-4000:]


def test_two_nodes_on_loopback_match_one_node(corpus, ddp_reference, tmp_path):
    """Two torchrun 'nodes' (one process each) meet through c10d rendezvous on loopback
    and train exactly like one node with two processes."""
    port, run_dir = free_local_port(), tmp_path / "two_nodes"
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
        *DISTRIBUTED_RUN,
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


def test_srun_tasks_without_torchrun_match_torchrun(corpus, ddp_reference, tmp_path):
    """Two tasks as `srun --ntasks=2 python train.py` starts them (SLURM's variables, no
    torchrun): they find their ranks and master from SLURM and train exactly like torchrun."""
    run_dir = tmp_path / "srun"
    command = [
        sys.executable,
        "train.py",
        *corpus,
        *DISTRIBUTED_RUN,
        *DS_STEPS,
        "strategy=ddp",
        f"hydra.run.dir={run_dir}",
    ]
    slurm = {
        "SLURM_JOB_ID": "4243",
        "SLURM_STEP_ID": "0",
        "SLURM_NTASKS": "2",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_JOB_NODELIST": "localhost",
        "MASTER_PORT": str(free_local_port()),
        "OMP_NUM_THREADS": "1",
    }
    procs = [
        subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **slurm, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "DDPStrategy on cpu, world size 2" in (run_dir / "train.log").read_text()
    assert (run_dir / "train.rank1.log").is_file()
    reference, srun = last_params(ddp_reference), last_params(run_dir)
    for name in reference:
        torch.testing.assert_close(srun[name], reference[name], rtol=0, atol=0, msg=name)


@pytest.mark.parametrize(
    "strategy",
    [
        ["strategy=ddp", "trainer.accumulate_grad_batches=2"],
        ["strategy=deepspeed", "strategy.zero_stage=2", "trainer.accumulate_grad_batches=2"],
    ],
)
@needs_bf16
def test_bf16_trains_under_ddp_and_deepspeed(corpus, tmp_path, strategy):
    run_dir = tmp_path / "bf16"
    run(
        torchrun(
            *corpus,
            *DISTRIBUTED_RUN,
            *strategy,
            "strategy.precision=bf16",
            "trainer.max_steps=4",
            "trainer.val_every_steps=4",
            f"hydra.run.dir={run_dir}",
        )
    )
    losses = train_losses(run_dir)
    assert len(losses) == 4 and all(0 < loss < 10 for loss in losses)
    assert last_params(run_dir)["decoder.output.weight"].dtype == torch.float32
    # Reported as used, DeepSpeed's engine cast included: the log and the checkpoint.
    started = logged(run_dir / "train.log")
    assert re.search(r"world size 2, \d+ CPU threads, precision bf16", started)
    assert read_meta(run_dir / "checkpoints" / "last")["precision"] == "bf16"


def test_ctrl_c_checkpoints_every_rank_which_exits_130(corpus, tmp_path):
    """Ctrl-C at a terminal reaches torchrun only (its workers run in sessions of their
    own); torchrun passes SIGINT on. Every rank finishes its step, the checkpoint holds
    both ranks' files, each rank exits with 128 + 2, and no worker survives. torchrun's
    own status is 1: it ends by raising its SignalException."""
    run_dir, statuses = tmp_path / "interrupted", tmp_path / "statuses"
    args = torchrun(
        *corpus, *DISTRIBUTED_RUN, "trainer.max_steps=100000", f"hydra.run.dir={run_dir}"
    )
    args[args.index("train.py")] = str(HELPERS / "recording_train.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EXIT_STATUS_DIR": str(statuses)}
    proc = start_training(args, run_dir, {**env, "PYTHONPATH": str(ROOT)})
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) != 0  # torchrun's own status (1, see above)
    leftover = subprocess.run(["pgrep", "-f", f"hydra.run.dir={run_dir}"], capture_output=True)
    assert leftover.stdout == b"", "worker processes survived Ctrl-C"
    assert {p.name: p.read_text() for p in statuses.iterdir()} == {
        "rank0": "130\n",
        "rank1": "130\n",
    }
    stopped_with_a_checkpoint(run_dir, "SIGINT", ranks=2)


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
        str(free_local_port()),
    ]
    run(
        [
            *launcher,
            "train.py",
            *corpus,
            *DISTRIBUTED_RUN,
            "strategy=deepspeed",
            "trainer.max_steps=2",
            "trainer.val_every_steps=2",
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert len(train_losses(run_dir)) == 2
    assert "DeepSpeedStrategy on cpu, world size 2" in (run_dir / "train.log").read_text()


# ------------------------------------------------------------------ checkpoints
@pytest.mark.parametrize("saving", [[], ["checkpoint.every_steps=1", "checkpoint.async_save=true"]])
def test_ddp_run_resumed_midway_matches_the_uninterrupted_one(
    corpus, ddp_reference, tmp_path, saving
):
    """Also with a background save after every step while DDP trains."""
    run_dir = tmp_path / "resumed"
    first = [
        *corpus,
        *DISTRIBUTED_RUN,
        *DS_STEPS[1:],
        *saving,
        "strategy=ddp",
        f"hydra.run.dir={run_dir}",
    ]
    run(torchrun(*first, "trainer.max_steps=3"))
    assert {p.name for p in (run_dir / "checkpoints" / "last" / "rank").iterdir()} == {
        "rank_00000.pt",
        "rank_00001.pt",
    }
    run(torchrun(*first, "trainer.max_steps=6", "resume=auto"))
    assert train_losses(run_dir) == train_losses(ddp_reference)
    reference, resumed = last_params(ddp_reference), last_params(run_dir)
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name


# Compressed from the third step on, in many small DDP buckets (all-reduced one at a time
# under gloo: strategy/comm_hooks.py).
POWERSGD = [
    "strategy.comm_hook=powersgd",
    "strategy.powersgd_start_step=2",
    "strategy.bucket_cap_mb=0.01",
]


def test_powersgd_run_resumed_midway_matches_the_uninterrupted_one(corpus, ddp_reference, tmp_path):
    """Stopped after the first compressed step and resumed: the same losses and bitwise the
    same weights as an unbroken PowerSGD run. Each rank's checkpoint holds its own error
    feedback; the projections Q agree. The resumed DDP reduces its first step in one bucket
    holding every parameter (as any new DDP does), so the state must be re-cut to fit."""
    common = [*corpus, *DISTRIBUTED_RUN, *DS_STEPS[1:], "strategy=ddp", *POWERSGD]
    unbroken, resumed = tmp_path / "unbroken", tmp_path / "resumed"
    run(torchrun(*common, "trainer.max_steps=6", f"hydra.run.dir={unbroken}"))
    run(torchrun(*common, "trainer.max_steps=3", f"hydra.run.dir={resumed}"))
    ranks = [
        torch.load(resumed / "checkpoints" / "last" / "rank" / f"rank_0000{rank}.pt")["comm_hook"]
        for rank in (0, 1)
    ]
    assert [state["iter"] for state in ranks] == [3, 3]
    compressed = [name for name, kinds in ranks[0]["parameters"].items() if "q" in kinds]
    assert compressed
    for name in compressed:
        mine, theirs = (state["parameters"][name] for state in ranks)
        assert torch.equal(mine["q"], theirs["q"]), name
        assert not torch.equal(mine["error"], theirs["error"]), name
    run(torchrun(*common, "trainer.max_steps=6", "resume=auto", f"hydra.run.dir={resumed}"))
    assert train_losses(resumed) == train_losses(unbroken)
    reference, mine = last_params(unbroken), last_params(resumed)
    for name in reference:
        assert torch.equal(mine[name], reference[name]), name
    # Plain all-reduce for two steps, then compressed gradients: off plain DDP's course.
    plain = train_losses(ddp_reference)
    assert train_losses(unbroken)[:3] == plain[:3]
    assert all(a != b for a, b in zip(train_losses(unbroken)[3:], plain[3:]))
    assert "gradient communication: powersgd" in (unbroken / "train.log").read_text()


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_run_resumed_midway_tracks_ddp(corpus, ddp_reference, tmp_path, stage):
    """Every step, before the stop and after the resume, follows uninterrupted DDP."""
    run_dir = tmp_path / f"zero{stage}_resumed"
    first = [
        *corpus,
        *DISTRIBUTED_RUN,
        *DS_STEPS[1:],
        "strategy=deepspeed",
        f"strategy.zero_stage={stage}",
        f"hydra.run.dir={run_dir}",
    ]
    run(torchrun(*first, "trainer.max_steps=3"))
    run(torchrun(*first, "trainer.max_steps=6", "resume=auto"))
    assert train_losses(run_dir) == pytest.approx(train_losses(ddp_reference), rel=1e-3)
    reference, resumed = last_params(ddp_reference), last_params(run_dir)
    assert resumed.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], rtol=1e-3, atol=1e-4)


def test_world_size_2_then_1_then_2_trains_every_batch_of_the_epoch_once(corpus, tmp_path):
    """Written by 2 ranks, continued by 1, finished by 2 again: DCP reshards, and the
    batches actually trained, in step order, are the epoch's batch plan (the same at every
    world size) with none skipped or repeated. The tokenizer is trained once, by rank 0.
    A deepspeed run refuses to resume this checkpoint, naming its strategy."""
    run_dir, batches, cache = tmp_path / "two_one_two", tmp_path / "batches", tmp_path / "cache"
    common = [*corpus, *DISTRIBUTED_RUN, "trainer.val_every_steps=0", f"data.cache_dir={cache}"]
    common += ["resume=auto", f"hydra.run.dir={run_dir}"]
    recording = str(HELPERS / "recording_train.py")
    two_ranks = torchrun(*common, "strategy=ddp")
    two_ranks[two_ranks.index("train.py")] = recording
    batches.mkdir()
    run([*two_ranks, "trainer.max_steps=2"], BATCH_LOG=str(batches / "a"))
    assert torch.load(run_dir / "checkpoints" / "last" / "trainer.pt")["sampler"]["consumed"] == 4
    assert "tokenizer: training SentencePiece" in (run_dir / "train.log").read_text()
    rank1_log = (run_dir / "train.rank1.log").read_text()
    assert "vocabulary:" in rank1_log and "tokenizer:" not in rank1_log
    assert len(list((cache / "tokenizers").iterdir())) == 1
    run([sys.executable, recording, *common, "trainer.max_steps=5"], BATCH_LOG=str(batches / "b"))
    run(
        [*two_ranks, "trainer.max_steps=null", "trainer.max_epochs=1"], BATCH_LOG=str(batches / "c")
    )
    assert torch.load(run_dir / "checkpoints" / "last" / "trainer.pt")["trainer"]["epoch"] == 1
    assert (run_dir / "train.log").read_text().count("resumed from") == 2

    plans, trained = [], []
    for segment, world_size in (("a", 2), ("b", 1), ("c", 2)):
        ranks = []
        for rank in range(world_size):
            lines = (batches / f"{segment}.rank{rank}.jsonl").read_text().splitlines()
            records = [json.loads(line) for line in lines]
            plans += [r["plan"] for r in records if "plan" in r]
            ranks.append([r["batch"] for r in records if "batch" in r and r["epoch"] == 0])
        trained += [batch for step in zip(*ranks, strict=True) for batch in step]
    plan = plans[0]
    assert all(other == plan for other in plans)
    assert sorted(i for batch in plan for i in batch) == list(range(TRAIN_PAIRS))
    # The epoch's last round on 2 ranks is short when an odd number of batches was left
    # after step 5 (7 consumed): rank 1 then fills it with the epoch's first batch.
    assert trained == plan + plan[: (len(plan) - 7) % 2]

    deepspeed = [sys.executable, "train.py", *common, "strategy=deepspeed", "trainer.max_steps=50"]
    assert "written with strategy=single/ddp" in said(run(deepspeed, status=2))


def test_sigterm_checkpoints_every_rank_which_exits_143_and_the_run_resumes(corpus, tmp_path):
    """SIGTERM to torchrun (as a scheduler sends it) is passed on to the workers: each
    rank checkpoints and exits 143, its own status as it wrote it at exit. torchrun
    itself ends with 1 and does not print its workers' statuses; rank 0's last message
    in its console gives them, as the README says."""
    run_dir, statuses, console = tmp_path / "preempted", tmp_path / "statuses", tmp_path / "out"
    common = [*corpus, *DISTRIBUTED_RUN, "trainer.val_every_steps=0", f"hydra.run.dir={run_dir}"]
    args = torchrun(*common, "trainer.max_steps=100000")
    args[args.index("train.py")] = str(HELPERS / "recording_train.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = start_training(args, run_dir, {**env, "EXIT_STATUS_DIR": str(statuses)}, console)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 1
    assert {p.name: p.read_text() for p in statuses.iterdir()} == {
        "rank0": "143\n",
        "rank1": "143\n",
    }
    step = stopped_with_a_checkpoint(run_dir, "SIGTERM", ranks=2)
    assert f"stopped by SIGTERM at step {step};" in " ".join(console.read_text().split())
    assert "Exit status 143." in " ".join(console.read_text().split())
    run(torchrun(*common, f"trainer.max_steps={step + 2}", "resume=auto"))
    assert torch.load(run_dir / "checkpoints" / "last" / "trainer.pt")["trainer"]["step"] == (
        step + 2
    )


def test_sigusr1_in_one_process_checkpoints_and_exits_138(corpus, tmp_path):
    """SLURM's `--signal=USR1@120` warning: checkpoint, then exit with 128 + 10."""
    run_dir = tmp_path / "warned"
    args = [sys.executable, "train.py", *corpus, *DISTRIBUTED_RUN, "trainer.max_steps=100000"]
    proc = start_training([*args, f"hydra.run.dir={run_dir}"], run_dir)
    proc.send_signal(signal.SIGUSR1)
    proc.send_signal(signal.SIGUSR1)  # a second one must not cut the checkpoint short
    assert proc.wait(timeout=60) == 128 + signal.SIGUSR1
    stopped_with_a_checkpoint(run_dir, "SIGUSR1", ranks=1)
    assert "resume=auto" in (run_dir / "train.log").read_text()


def test_ctrl_c_in_a_plain_process_checkpoints_the_step_reached_and_exits_130(
    corpus, tmp_path, caplog
):
    """`python train.py` at a terminal, no launcher: Ctrl-C (SIGINT) finishes the step,
    writes a complete checkpoint of the step reached, exits 130 (a KeyboardInterrupt
    would end it by the signal itself: status -2 here), and resume=auto continues from
    that checkpoint."""
    run_dir = tmp_path / "ctrl_c"
    common = [*corpus, *DISTRIBUTED_RUN, "trainer.val_every_steps=0"]
    args = [sys.executable, "train.py", *common, "trainer.max_steps=100000"]
    proc = start_training([*args, f"hydra.run.dir={run_dir}"], run_dir)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    step = stopped_with_a_checkpoint(run_dir, "SIGINT", ranks=1)
    caplog.set_level("INFO", logger="dist_lstm.train.run")
    train(compose_config([*common, f"trainer.max_steps={step + 1}", "resume=auto"]), run_dir)
    assert f"resumed from {run_dir / 'checkpoints' / step_name(step)}: step {step}" in caplog.text
    assert read_meta((run_dir / "checkpoints" / "last").resolve())["step"] == step + 1


def test_torchrun_restart_resumes_from_the_last_checkpoint(corpus, ddp_reference, tmp_path):
    """A rank fails at step 5 of the first attempt; torchrun --max-restarts=1 starts the
    group again, which resumes from step 4 and ends like a run that never failed."""
    run_dir = tmp_path / "restarted"
    args = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--max-restarts=1",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{free_local_port()}",
        str(ROOT / "tests" / "helpers" / "failing_train.py"),
        *corpus,
        *DISTRIBUTED_RUN,
        *DS_STEPS,
        "strategy=ddp",
        "checkpoint.every_steps=2",
        "resume=auto",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FAIL_STEP": "5", "FAIL_RANK": "1"}
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "injected failure" in (run_dir / "train.rank1.log").read_text()
    assert "resumed from" in (run_dir / "train.log").read_text()
    assert train_losses(run_dir) == train_losses(ddp_reference)
    reference, restarted = last_params(ddp_reference), last_params(run_dir)
    for name in reference:
        assert torch.equal(restarted[name], reference[name]), name


def test_deepspeed_checkpoint_resumes_at_another_world_size(corpus, tmp_path):
    """ZeRO-2 on 2 ranks, continued on 1: converted to DeepSpeed's universal format. A
    single-device run refuses to resume it, naming its strategy."""
    run_dir = tmp_path / "zero2_two_then_one"
    common = [
        *corpus,
        *DISTRIBUTED_RUN,
        "strategy=deepspeed",
        "strategy.zero_stage=2",
        "trainer.val_every_steps=2",
        f"hydra.run.dir={run_dir}",
    ]
    run(torchrun(*common, "trainer.max_steps=2"))
    single = [
        *corpus,
        *DISTRIBUTED_RUN,
        "strategy=single",
        "resume=auto",
        f"hydra.run.dir={run_dir}",
    ]
    refused = run([sys.executable, "train.py", *single, "trainer.max_steps=4"], status=2)
    assert "written with strategy=deepspeed" in said(refused)
    written = load_checkpoint(run_dir / "checkpoints" / "last")["model"]
    exported = tmp_path / "zero2.pt"
    run([sys.executable, "-m", "dist_lstm", "export", str(run_dir), str(exported)])
    single_file = torch.load(exported, weights_only=True)
    assert {"model", "config", "tokenizer", "step"} <= single_file.keys()
    for name, tensor in written.items():
        assert torch.equal(single_file["model"][name], tensor), name
    run(torchrun(*common, "trainer.max_steps=4", "resume=auto", nproc=1))
    assert (run_dir / "checkpoints" / "step_00000002" / "state" / "universal").is_dir()
    state = torch.load(run_dir / "checkpoints" / "last" / "trainer.pt")
    assert state["trainer"]["step"] == 4 and state["sampler"]["consumed"] == 6
    assert "resumed from" in (run_dir / "train.log").read_text()
    final = load_checkpoint(run_dir / "checkpoints" / "last")["model"]
    # Training went on from the converted weights, not from a fresh model: two Adam
    # steps at lr 2e-3 move each weight by about 4e-3 at most (a fresh init is ~0.1 off).
    moved = max(float((final[k] - written[k]).abs().max()) for k in written)
    assert 0 < moved < 0.01


def test_sigterm_stops_a_sweep_of_two_process_jobs_after_a_checkpoint(corpus, tmp_path):
    """SIGTERM to `python train.py -m ... launcher.nproc_per_node=2` (as a scheduler sends
    it): the workers checkpoint, the sweep stops with 143 and starts no further job.
    An explicit OMP_NUM_THREADS, unlike cores / 2, is what each worker uses (checked here
    because the run stops early: it oversubscribes the CPU)."""
    sweep_dir = tmp_path / "sweep"
    threads = (os.cpu_count() or 1) // 2 + 1
    command = [
        sys.executable,
        "train.py",
        "-m",
        *corpus,
        *DISTRIBUTED_RUN,
        "launcher.nproc_per_node=2",
        "trainer.max_steps=100000",
        "seed=1,2",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = start_training(command, sweep_dir / "0", env)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) == 143
    stopped_with_a_checkpoint(sweep_dir / "0", "SIGTERM", ranks=2)
    assert not (sweep_dir / "1").exists()
    for log in ("train.log", "train.rank1.log"):
        assert f"world size 2, {threads} CPU threads" in (sweep_dir / "0" / log).read_text()


def test_nproc_per_node_without_m_runs_local_workers_with_cores_over_n_threads(corpus, tmp_path):
    """`python train.py launcher.nproc_per_node=2` (no -m, no torchrun): one job of two
    worker processes, each with cores / 2 CPU threads when OMP_NUM_THREADS is unset
    (torch's default would be every core in each worker). An explicit value wins: the
    SIGTERM sweep test above."""
    run_dir = tmp_path / "two_workers"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    args = [sys.executable, "train.py", *corpus, *DISTRIBUTED_RUN, "launcher.nproc_per_node=2"]
    args += ["trainer.max_steps=2", "trainer.val_every_steps=2", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert read_meta((run_dir / "checkpoints" / "last").resolve())["world_size"] == 2
    threads = max(1, (os.cpu_count() or 1) // 2)
    for log in ("train.log", "train.rank1.log"):  # each worker's own header line
        assert f"world size 2, {threads} CPU threads" in (run_dir / log).read_text(), log


def test_a_save_killed_midway_is_never_loaded_and_a_second_signal_cannot_cut_one_short(
    corpus, tmp_path
):
    """The commit order: a save killed after its files were written and renamed into place,
    but before its COMPLETE marker, is skipped and removed by the next resume=auto, which
    continues from the checkpoint before. Then SIGTERM, and a second SIGTERM in the middle
    of that checkpoint's commit: logged and ignored, the checkpoint completes, status 143,
    and the run resumes from it."""
    run_dir = tmp_path / "killed"
    checkpoints = run_dir / "checkpoints"
    args = [*corpus, *DISTRIBUTED_RUN, "trainer.val_every_steps=0", "checkpoint.every_steps=2"]
    args += ["resume=auto", f"hydra.run.dir={run_dir}"]
    signalled = [sys.executable, str(HELPERS / "signal_in_save_train.py"), *args]
    signalled.append("trainer.max_steps=100")

    run(signalled, status=-signal.SIGKILL, SIGNAL_IN_SAVE="4:SIGKILL")
    half = checkpoints / "step_00000004"
    assert (half / "meta.pt").is_file() and (half / "trainer.pt").is_file()
    assert not (half / "COMPLETE").exists()
    assert (checkpoints / "step_00000002" / "COMPLETE").is_file()

    run(signalled, status=143, STOP_AT_STEP="3", SIGNAL_IN_SAVE="3:SIGTERM")
    log = (run_dir / "train.log").read_text()
    assert f"removing incomplete checkpoint {half}" in log and not half.exists()
    assert f"resumed from {checkpoints / 'step_00000002'}: step 2" in log
    assert "SIGTERM received: already stopping, the checkpoint is being written" in log
    assert (checkpoints / "last").resolve() == checkpoints / "step_00000003"
    assert (checkpoints / "step_00000003" / "COMPLETE").is_file()

    run([sys.executable, "train.py", *args, "trainer.max_steps=4"])
    log = (run_dir / "train.log").read_text()
    assert f"resumed from {checkpoints / 'step_00000003'}: step 3" in log
    assert torch.load(checkpoints / "last" / "trainer.pt")["trainer"]["step"] == 4


def test_workers_stop_with_their_launcher_when_it_is_killed(corpus, tmp_path):
    """SIGKILL to torchrun (what kill -9 or the OOM killer does) does not reach its
    workers, which run in sessions of their own: each must still checkpoint and stop
    instead of training on as an orphan, and the next job, started at once in the same
    run directory, continues from that checkpoint (it waits for them, never beside them)."""
    import psutil

    run_dir = tmp_path / "orphaned"
    args = torchrun(
        *corpus, *DISTRIBUTED_RUN, "trainer.val_every_steps=0", f"hydra.run.dir={run_dir}"
    )
    launcher = start_training([*args, "trainer.max_steps=100000"], run_dir)
    workers = [p for p in psutil.Process(launcher.pid).children() if "train.py" in p.cmdline()]
    assert len(workers) == 2
    launcher.kill()
    launcher.wait(timeout=10)
    run([*args, "trainer.max_steps=100000", "trainer.max_time=00:00:02", "resume=auto"])
    _, alive = psutil.wait_procs(workers, timeout=0)
    assert not alive, f"workers still training without their launcher: {alive}"
    for log_name in ("train.log", "train.rank1.log"):  # each rank stopped as on SIGTERM
        assert "stopped by SIGTERM" in " ".join((run_dir / log_name).read_text().split())
    said = " ".join((run_dir / "train.log").read_text().split())
    step = int(re.search(r"stopped by SIGTERM at step (\d+)", said).group(1))
    assert f"resumed from {run_dir}/checkpoints/step_{step:08d}" in said


def test_a_second_job_in_a_run_directory_in_use_is_refused_naming_the_first(corpus, tmp_path):
    run_dir = tmp_path / "shared"
    args = [sys.executable, "train.py", *corpus, *DISTRIBUTED_RUN, "trainer.val_every_steps=0"]
    first = start_training([*args, "trainer.max_steps=100000", f"hydra.run.dir={run_dir}"], run_dir)
    try:
        second = run(
            [*args, "trainer.max_steps=5", f"hydra.run.dir={run_dir}", "resume=auto"], status=2
        )
        said_ = said(second)
        assert f"is in use by process {first.pid} on" in said_ and "Traceback" not in said_
        assert first.poll() is None  # the first job trains on, untouched
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 143
    # the first job's claim ended with it: the next job continues the run
    step = torch.load(run_dir / "checkpoints" / "last" / "trainer.pt")["trainer"]["step"]
    run([*args, f"trainer.max_steps={step + 1}", f"hydra.run.dir={run_dir}", "resume=auto"])
