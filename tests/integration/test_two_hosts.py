"""Two hosts over a shaped link (benchmarks/two_hosts.py), one torchrun agent each,
as users run multi-node jobs: a node lost and brought back rejoins and the run continues
exactly; the node serving the rendezvous lost ends the job, and resume=auto continues it.
Skipped, with the reason, where network namespaces cannot be made."""

from __future__ import annotations

import re
import sys

import pytest

from tests.helpers.configs import DISTRIBUTED_RUN
from tests.helpers.launch import run, torchrun
from tests.helpers.paths import ROOT
from tests.helpers.runs import assert_same_training, logged, wait_for_step

sys.path.insert(0, str(ROOT / "benchmarks"))  # two_hosts.py serves benchmarks/multinode.py too
from two_hosts import TwoHosts, why_they_cannot_start  # noqa: E402

# long enough that no machine finishes before the fault at step 12
STEPS = ["trainer.max_steps=150", "checkpoint.every_steps=10", "trainer.val_every_steps=0"]


@pytest.fixture(scope="module")
def hosts():
    reason = why_they_cannot_start()
    if reason:
        pytest.skip(reason)
    pair = TwoHosts(rate="1gbit")
    try:
        pair.create()
    except RuntimeError as exc:
        pair.destroy()
        pytest.skip(str(exc))
    yield pair
    pair.destroy()


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The same training on one host, never interrupted."""
    run_dir = tmp_path_factory.mktemp("unbroken")
    run(torchrun(*corpus, *DISTRIBUTED_RUN, *STEPS, "strategy=ddp", f"hydra.run.dir={run_dir}"))
    return run_dir


def training(corpus, run_dir):
    return [
        "train.py",
        *corpus,
        *DISTRIBUTED_RUN,
        *STEPS,
        "strategy=ddp",
        f"hydra.run.dir={run_dir}",
        "resume=auto",
    ]


def assert_the_loss_was_reported(run_dir, agent_log):
    """The surviving rank says in one line that it lost the rest of the job. Where it is
    ended before it can (gloo aborts it from its own thread on an uncaught
    gloo::IoException, upstream; or its launcher, having lost the rendezvous store with
    the first host, stops it), the launcher's log shows why."""
    said = logged(run_dir / "train.log") + logged(run_dir / "train.rank1.log")
    if "lost contact with the rest of the job" in said:
        return
    launcher = logged(agent_log)
    assert re.search(
        r"terminate called after throwing an instance of 'gloo::|"
        r"Signal \d+ \(SIG[A-Z]+\) received by PID|"
        r"The connection to the C10d store has failed",
        launcher,
    ), (
        "the surviving rank did not say it lost contact, and its launcher does not say why:"
        f"\n{said[-2000:]}\n--- its launcher:\n{launcher[-4000:]}"
    )


def test_a_node_lost_and_brought_back_rejoins_and_the_run_continues_exactly(
    hosts,
    corpus,
    reference,
    tmp_path,
):
    """Everything on host 1 is killed mid-run, then its agent starts again: with
    --max-restarts, host 0's agent restarts its worker, both rendezvous again and the
    run resumes from its newest checkpoint, bitwise as if never stopped."""
    run_dir = tmp_path / "run"
    args, logs = training(corpus, run_dir), [tmp_path / "host0.log", tmp_path / "host1.log"]
    host0 = hosts.agent(0, "rejoin", args, ROOT, logs[0])
    host1 = hosts.agent(1, "rejoin", args, ROOT, logs[1])
    wait_for_step(run_dir, 12)
    hosts.kill_host(1)
    host1.wait(timeout=30)
    host1 = hosts.agent(1, "rejoin", args, ROOT, logs[1])
    assert host0.wait(timeout=300) == 0, logged(logs[0])[-3000:]
    assert host1.wait(timeout=300) == 0, logged(logs[1])[-3000:]
    assert_the_loss_was_reported(run_dir, logs[0])
    assert "resumed from" in logged(run_dir / "train.log")
    assert_same_training(run_dir, reference)


def test_the_rendezvous_host_lost_ends_the_job_and_resume_continues_it_exactly(
    hosts,
    corpus,
    reference,
    tmp_path,
):
    run_dir = tmp_path / "run"
    args, logs = training(corpus, run_dir), [tmp_path / "host0.log", tmp_path / "host1.log"]
    hosts.agent(0, "hostlost", args, ROOT, logs[0])
    host1 = hosts.agent(1, "hostlost", args, ROOT, logs[1])
    wait_for_step(run_dir, 12)
    hosts.kill_host(0)
    assert host1.wait(timeout=60) != 0  # no rendezvous left to rejoin: the job ends
    assert_the_loss_was_reported(run_dir, logs[1])
    # the job started again on both hosts continues from the newest checkpoint
    again = [hosts.agent(i, "hostlost-again", args, ROOT, logs[i]) for i in (0, 1)]
    assert [agent.wait(timeout=300) for agent in again] == [0, 0], logged(logs[1])[-3000:]
    assert_same_training(run_dir, reference)
