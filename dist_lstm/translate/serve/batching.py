"""Requests that arrive together are decoded together, through one bounded queue.

One worker takes the oldest waiting request and every other waiting one with the same
options (model, beam, alignments), up to `batch_texts` texts, and decodes them in one
search on a single background thread: the event loop keeps answering /health and
rejecting overload while the model works. A full queue answers 503 at once instead of
letting memory and latency grow.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from dist_lstm.translate.serve.service import JobOptions

log = logging.getLogger(__name__)

Runner = Callable[[JobOptions, Sequence[str]], List[Dict[str, Any]]]


class Overloaded(Exception):
    """The queue is full: the client should retry later (HTTP 503)."""


@dataclass
class _Request:
    options: JobOptions
    texts: List[str]
    done: asyncio.Future = field(repr=False)


class Batcher:
    def __init__(self, run: Runner, queue_size: int, batch_texts: int):
        self.run = run
        self.batch_texts = batch_texts
        self.queue: "asyncio.Queue[_Request]" = asyncio.Queue(maxsize=queue_size)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="translate")
        self.worker: Optional[asyncio.Task] = None
        self.batches = 0  # searches run, for /health

    def start(self) -> None:
        self.worker = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True, cancel_futures=True)

    @property
    def waiting(self) -> int:
        return self.queue.qsize()

    async def submit(self, options: JobOptions, texts: List[str]) -> List[Dict[str, Any]]:
        """The request's results, in order; Overloaded when the queue is full."""
        return await self.enqueue(options, texts)

    def enqueue(
        self, options: JobOptions, texts: List[str]
    ) -> "asyncio.Future[List[Dict[str, Any]]]":
        """Queue a request now, without yielding to the event loop, and return the future
        of its results; Overloaded when the queue is full. Synchronous so that the queue's
        state is known the moment it returns (what submit awaits, and tests rely on)."""
        request = _Request(options, texts, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(request)
        except asyncio.QueueFull:
            raise Overloaded(self.queue.maxsize) from None
        return request.done

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._take_batch(await self.queue.get())
            texts = [text for request in batch for text in request.texts]
            try:
                results = await loop.run_in_executor(
                    self.executor, self.run, batch[0].options, texts
                )
            except Exception as exc:  # one failing search must not stop the server
                log.exception("translation failed")
                for request in batch:
                    if not request.done.done():
                        request.done.set_exception(exc)
                continue
            self.batches += 1
            start = 0
            for request in batch:
                if not request.done.done():  # the client may have gone
                    request.done.set_result(results[start : start + len(request.texts)])
                start += len(request.texts)

    def _take_batch(self, first: _Request) -> List[_Request]:
        """`first` and the waiting requests with its options, within batch_texts texts;
        the others keep their place in the queue."""
        batch, others, count = [first], [], len(first.texts)
        while not self.queue.empty():
            request = self.queue.get_nowait()
            if request.options == first.options and count + len(request.texts) <= self.batch_texts:
                batch.append(request)
                count += len(request.texts)
            else:
                others.append(request)
        for request in others:
            self.queue.put_nowait(request)  # room: they were just taken out
        return batch
