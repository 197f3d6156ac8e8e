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


def test_batcher_times_each_stage():
    def score(items):
        time.sleep(0.02)
        return list(items)

    async def main():
        b = MicroBatcher(score, lambda results: list(results))
        b.start()
        await asyncio.gather(*(b.submit(i) for i in range(3)))
        await b.stop()
        return b.stats

    stats = _run(main())
    assert stats["score_s"] >= 0.02 and stats["score_cpu_s"] < stats["score_s"]  # sleeping is not CPU
    assert stats["commit_s"] > 0 and stats["commit_cpu_s"] >= 0


@pytest.fixture()
def anchoring(tmp_path):
    from serving.anchor import AnchorSettings

    return AnchorSettings(key_path=tmp_path / "k" / "anchor.key", anchor_file=tmp_path / "a.jsonl", every=3)


def _rec(i: int) -> dict:
    return {"score_id": f"{i:032x}", "patient_id": f"p{i}", "time": f"2026-01-01T00:00:{i:02d}+00:00"}


def test_group_commit_anchors_off_the_commit_path(tmp_path, anchoring):
    from serving.anchor import AnchorLog
    from serving.ledger import open_ledger

    led = open_ledger(tmp_path / "l.db", anchoring=anchoring)
    led.append_many([_rec(i) for i in range(1, 5)], anchor_later=True)  # 4 >= every: an anchor falls due
    led._anchor_thread.join(30)
    assert [a.seq for a in AnchorLog(anchoring.anchor_file).read()[0]] == [4]
    assert not led._signed_here  # the anchor covered every signature this writer made
    led.append_many([_rec(5)], anchor_later=True)
    assert led._signed_here.keys() == {5}
    led.close()  # waits for a running anchor, then anchors at close
    assert [(a.seq, a.reason) for a in AnchorLog(anchoring.anchor_file).read()[0]] == [(4, "every 3 appends"),
                                                                                      (5, "close")]
    assert open_ledger(tmp_path / "l.db", anchoring=anchoring, read_only=True).verify().ok


def test_anchor_check_skips_only_signatures_it_made_itself(tmp_path, anchoring):
    from serving.ledger import check_chain, open_ledger

    led = open_ledger(tmp_path / "l.db", anchoring=anchoring)
    led.append_many([_rec(1), _rec(2)])
    known = dict(led._signed_here)
    assert known.keys() == {1, 2}
    rows, (head,) = led._read((f"SELECT {led._cols} FROM ledger ORDER BY seq", ()),
                              ("SELECT seq, hash FROM ledger_head", ()))
    assert check_chain(rows, head, key=led.key, known_signatures=known).ok
    forged = [rows[0], (*rows[1][:7], "AAAA" + rows[1][7][4:])]  # another signature on seq 2
    rep = check_chain(forged, head, key=led.key, known_signatures=known)
    assert not rep.ok and "seq 2: signature does not verify" in rep.problems[0]
    led.close()
