"""The micro-batcher: batches form under load, per-item errors stay per item, commits gate responses."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from serving.batching import MicroBatcher


def _run(coro):
    return asyncio.run(coro)


def test_batcher_groups_concurrent_items_and_keeps_per_item_errors():
    seen: list[list[int]] = []
    committed: list[int] = []

    def score(items):
        seen.append(list(items))
        time.sleep(0.05)  # while this batch scores, the others queue up
        return [ValueError(f"bad {i}") if i == 3 else i * 10 for i in items]

    def commit(results):
        committed.extend(r for r in results if not isinstance(r, Exception))
        return results

    async def main():
        b = MicroBatcher(score, commit, max_batch=8)
        b.start()
        tasks = [asyncio.create_task(b.submit(i)) for i in range(12)]
        out = await asyncio.gather(*tasks, return_exceptions=True)
        await b.stop()
        return out, b.stats

    out, stats = _run(main())
    assert [o if not isinstance(o, Exception) else str(o) for o in out] == \
        [0, 10, 20, "bad 3", 40, 50, 60, 70, 80, 90, 100, 110]
    assert stats["items"] == 12 and stats["batches"] < 12 and stats["largest"] <= 8
    assert sorted(committed) == [0, 10, 20, 40, 50, 60, 70, 80, 90, 100, 110]


def test_batcher_commit_failure_reaches_every_caller_of_the_batch():
    def commit(results):
        raise OSError("disk full")

    async def main():
        b = MicroBatcher(lambda items: list(items), commit)
        b.start()
        out = await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True)
        await b.stop()
        return out

    out = _run(main())
    assert all(isinstance(o, OSError) and "disk full" in str(o) for o in out)


def test_batcher_commits_in_scoring_order():
    order: list[int] = []
    lock = threading.Lock()

    def commit(results):
        time.sleep(0.01 * (results[0] % 3))  # uneven commit times must not reorder
        with lock:
            order.extend(results)
        return results

    async def main():
        b = MicroBatcher(lambda items: list(items), commit, max_batch=1)
        b.start()
        await asyncio.gather(*(b.submit(i) for i in range(10)))  # several commits in flight at once
        await b.stop()

    _run(main())
    assert order == list(range(10))


def test_batcher_must_be_started():
    with pytest.raises(RuntimeError, match="start\\(\\) was not called"):
        _run(MicroBatcher(lambda items: list(items)).submit(1))
