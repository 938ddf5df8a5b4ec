"""Dynamic batching of query encoding: texts that arrive together for one encoder are encoded as one batch.

A batch takes every text already waiting (up to ``max_batch``); when fewer wait, it waits at most ``wait_s`` after
its first text for more. While a batch encodes, newcomers queue and form the next batch, so under load batches
fill without any waiting and when idle a lone query waits at most ``wait_s``. Encoding runs on one thread of its
own per encoder (the model's own threads do the parallel work).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class EncodeBatcher:
    """``await batcher.encode(text)``: the text's vector, encoded in a batch with whatever arrived with it."""

    def __init__(self, encode: Callable[[list[str]], list], *, max_batch: int, wait_s: float,
                 on_batch: Callable[[int], None] = lambda size: None, name: str = "encode") -> None:
        self._encode, self.max_batch, self.wait_s, self._on_batch = encode, max_batch, wait_s, on_batch
        self._queue: asyncio.Queue[tuple[str, asyncio.Future]] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def encode(self, text: str) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((text, future))
        return await future

    async def _gather(self) -> list[tuple[str, asyncio.Future]]:
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [(text, future) for text, future in batch if not future.done()]  # a timed-out caller left

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather()
            if not batch:
                continue
            self._on_batch(len(batch))
            try:
                vectors = await loop.run_in_executor(self._executor, self._encode, [text for text, _ in batch])
            except Exception as exc:  # every caller of the batch gets the encoder's error
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), vector in zip(batch, vectors):
                if not future.done():
                    future.set_result(vector)
