"""The server's batcher: waiting requests with the same options share one search; a full
queue refuses at once; a failing search fails its requests only."""

import asyncio
import threading

import pytest

from dist_lstm.serve.batching import Batcher, Overloaded
from dist_lstm.serve.service import JobOptions

BEAM2 = JobOptions("m", 2, False)


class Runner:
    """Records each search; the first one blocks until released, so requests pile up."""

    def __init__(self):
        self.calls, self.release = [], threading.Event()

    def __call__(self, options, texts):
        self.calls.append((options, list(texts)))
        self.release.wait(timeout=10)
        if "boom" in texts:
            raise RuntimeError("search failed")
        return [f"{options.beam}:{text}" for text in texts]


async def settle():
    for _ in range(20):
        await asyncio.sleep(0.01)


def test_requests_waiting_together_are_decoded_in_one_search_in_order():
    async def scenario():
        runner = Runner()
        batcher = Batcher(runner, queue_size=8, batch_texts=4)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(BEAM2, ["a"]))
        await settle()  # the worker is now busy with "a"
        others = [
            asyncio.ensure_future(batcher.submit(BEAM2, ["b", "c"])),
            asyncio.ensure_future(batcher.submit(JobOptions("m", 5, False), ["d"])),
            asyncio.ensure_future(batcher.submit(BEAM2, ["e"])),
        ]
        await settle()
        runner.release.set()
        results = await asyncio.gather(first, *others)
        await batcher.stop()
        return runner.calls, results

    calls, results = asyncio.run(scenario())
    assert [texts for _, texts in calls] == [["a"], ["b", "c", "e"], ["d"]]
    assert results == [["2:a"], ["2:b", "2:c"], ["5:d"], ["2:e"]]


def test_a_full_queue_refuses_at_once():
    async def scenario():
        runner = Runner()
        batcher = Batcher(runner, queue_size=2, batch_texts=4)
        batcher.start()
        busy = asyncio.ensure_future(batcher.submit(BEAM2, ["a"]))
        await settle()
        waiting = [asyncio.ensure_future(batcher.submit(BEAM2, [t])) for t in "bc"]
        await settle()
        with pytest.raises(Overloaded):
            await batcher.submit(BEAM2, ["d"])
        runner.release.set()
        done = await asyncio.gather(busy, *waiting)
        await batcher.stop()
        return done

    assert asyncio.run(scenario()) == [["2:a"], ["2:b"], ["2:c"]]


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
