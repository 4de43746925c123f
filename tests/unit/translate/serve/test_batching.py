"""The server's batcher: waiting requests with the same options share one search; a full
queue refuses at once; a failing search fails its requests only.

No test waits on a clock: the fake search signals when it has started and blocks until
released, and `Batcher.enqueue` queues synchronously, so the queue's state is known at
every point where a test decides something.
"""

import asyncio
import threading

import pytest

from dist_lstm.translate.serve.batching import Batcher, Overloaded
from dist_lstm.translate.serve.service import JobOptions

BEAM2 = JobOptions("m", 2, False)
BEAM5 = JobOptions("m", 5, False)


class Runner:
    """Records each search; every search blocks until released, so requests pile up."""

    def __init__(self):
        self.calls, self.started, self.release = [], threading.Event(), threading.Event()

    def __call__(self, options, texts):
        self.calls.append((options, list(texts)))
        self.started.set()
        assert self.release.wait(timeout=60), "the test never released the search"
        if "boom" in texts:
            raise RuntimeError("search failed")
        return [f"{options.beam}:{text}" for text in texts]

    async def searching(self) -> None:
        """Return once the worker is inside its first search (it took that request off
        the queue, with whatever could join it); yields to the loop meanwhile."""
        assert await asyncio.to_thread(self.started.wait, 60), "the worker never searched"


def test_requests_waiting_together_are_decoded_in_one_search_in_order():
    async def scenario():
        runner = Runner()
        batcher = Batcher(runner, queue_size=8, batch_texts=4)
        batcher.start()
        first = batcher.enqueue(BEAM2, ["a"])
        await runner.searching()  # "a" searches alone: nothing else was queued yet
        others = [
            batcher.enqueue(BEAM2, ["b", "c"]),
            batcher.enqueue(BEAM5, ["d"]),  # other options: a search of its own
            batcher.enqueue(BEAM2, ["e"]),
            batcher.enqueue(BEAM2, ["f"]),  # b, c, e, f: exactly batch_texts
            batcher.enqueue(BEAM2, ["g", "h"]),  # would make 6 texts: waits for the next
        ]
        assert batcher.waiting == 5
        runner.release.set()
        results = await asyncio.gather(first, *others)
        await batcher.stop()
        return runner.calls, results, batcher.batches

    calls, results, batches = asyncio.run(scenario())
    assert calls == [
        (BEAM2, ["a"]),
        (BEAM2, ["b", "c", "e", "f"]),
        (BEAM5, ["d"]),
        (BEAM2, ["g", "h"]),
    ]
    assert results == [["2:a"], ["2:b", "2:c"], ["5:d"], ["2:e"], ["2:f"], ["2:g", "2:h"]]
    assert batches == 4


def test_a_full_queue_refuses_at_once():
    async def scenario():
        runner = Runner()
        batcher = Batcher(runner, queue_size=2, batch_texts=4)
        batcher.start()
        busy = batcher.enqueue(BEAM2, ["a"])
        await runner.searching()  # the queue is empty again, the worker busy
        waiting = [batcher.enqueue(BEAM2, [t]) for t in "bc"]  # the queue is full
        with pytest.raises(Overloaded):
            await batcher.submit(BEAM2, ["d"])  # the app's call: refused without waiting
        assert batcher.waiting == 2 and not busy.done()
        runner.release.set()
        done = await asyncio.gather(busy, *waiting)
        await batcher.stop()
        return runner.calls, done

    calls, done = asyncio.run(scenario())
    assert done == [["2:a"], ["2:b"], ["2:c"]]
    assert [texts for _, texts in calls] == [["a"], ["b", "c"]]  # "d" was never searched


def test_a_failing_search_fails_its_requests_and_the_next_ones_are_served():
    async def scenario():
        runner = Runner()
        runner.release.set()
        batcher = Batcher(runner, queue_size=4, batch_texts=4)
        batcher.start()
        with pytest.raises(RuntimeError, match="search failed"):
            await batcher.submit(BEAM2, ["boom"])
        after = await batcher.submit(BEAM2, ["fine"])
        await batcher.stop()
        return after

    assert asyncio.run(scenario()) == ["2:fine"]
