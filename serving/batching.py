"""Adaptive micro-batching with a two-stage pipeline for id-based scoring.

Requests that arrive while a batch is being scored wait for the next one, so under load
one feature read, one model call and one ledger transaction (group commit) serve many
requests; an idle server scores a lone request at once (no waiting window).

Stage 1 (score) and stage 2 (commit to the ledger) run on two worker threads, so batch
n+1 is scored while batch n's commit waits for the disk. Each stage has one thread, so
batches are committed in the order they were scored, and every response of a batch is
released only after that batch's commit.

`stats` counts batches and items and times each stage (wall and the stage thread's CPU
seconds): two clock reads per batch and stage, cheap enough to stay on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Sequence
from typing import Any

# (items) -> one result per item: a value or the exception that item should raise
StageFn = Callable[[Sequence[Any]], list[Any]]


class MicroBatcher:
    def __init__(self, score: StageFn, commit: StageFn | None = None, *, max_batch: int = 64,
                 max_commits_in_flight: int = 2) -> None:
        self._score = score
        self._commit = commit
        self._max_batch = max_batch
        self._max_in_flight = max_commits_in_flight
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None
        self._slots: asyncio.Semaphore | None = None
        self._pending: set[asyncio.Task] = set()
        self._score_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="score")
        self._commit_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self.stats = {"batches": 0, "items": 0, "largest": 0, "busy_s": 0.0,
                      "score_s": 0.0, "score_cpu_s": 0.0, "commit_s": 0.0, "commit_cpu_s": 0.0}

    def _timed(self, stage: str, fn: StageFn, items: Sequence[Any]) -> list[Any]:
        """fn(items) on a stage thread, its wall and CPU time added to stats (one writer per stage)."""
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(items)
        finally:
            self.stats[f"{stage}_cpu_s"] += time.thread_time() - cpu
            self.stats[f"{stage}_s"] += time.perf_counter() - wall

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self._max_in_flight)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        self._score_pool.shutdown(wait=True)
        self._commit_pool.shutdown(wait=True)

    async def submit(self, item: Any) -> Any:
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called (the app's lifespan starts it)")
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((item, fut))
        return await fut

    @staticmethod
    def _settle(batch: list[tuple[Any, asyncio.Future]], results: list[Any]) -> None:
        for (_, fut), res in zip(batch, results, strict=True):
            if fut.done():  # the client went away
                continue
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)

    async def _commit_then_settle(self, batch: list, scored: list[Any], started: float) -> None:
        assert self._slots is not None and self._commit is not None  # _run only commits when there is a commit stage
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._commit_pool, self._timed, "commit",
                                                                         self._commit, scored)
        except Exception as exc:  # noqa: BLE001 - the commit failed: every caller of the batch gets it
            results = [exc] * len(batch)
        finally:
            self._slots.release()
        self.stats["busy_s"] += time.perf_counter() - started
        self._settle(batch, results)

    async def _run(self) -> None:
        assert self._queue is not None and self._slots is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            items = [it for it, _ in batch]
            self.stats["batches"] += 1
            self.stats["items"] += len(items)
            self.stats["largest"] = max(self.stats["largest"], len(items))
            started = time.perf_counter()
            try:
                scored = await loop.run_in_executor(self._score_pool, self._timed, "score", self._score, items)
            except Exception as exc:  # noqa: BLE001 - the whole batch failed: each caller gets it
                scored = [exc] * len(batch)
            if self._commit is None:
                self.stats["busy_s"] += time.perf_counter() - started
                self._settle(batch, scored)
                continue
            await self._slots.acquire()  # back-pressure: at most N batches waiting for the disk
            task = loop.create_task(self._commit_then_settle(batch, scored, started))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
