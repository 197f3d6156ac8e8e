"""Re-scoring every patient the feature store knows (after a promotion), through the API's code path.

`rescore_all` hands the ids to `Scorer.score_patients` a chunk at a time (one online read and one
model call per chunk, as the API's micro-batcher does) and writes each chunk's records with one
`ledger.append_many` (one transaction), so a score from the bulk run and one from POST /v1/scores
are the same record. A patient the store lacks, or whose features are incomplete, is counted and
listed with its reason; the other patients of its chunk are still scored and written.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ground.config import Params
from ground.errors import ConfigError, DataError, FacesurvError, NotAvailableError

# (patients done, patients in all): called once per chunk, after its records are committed
ProgressFn = Callable[[int, int], None]
REQUESTED_BY = "rescore"


class RescoreAborted(FacesurvError):
    """The run stopped part-way (the ledger refused a write, the model fails on every patient);
    what was committed before stays committed, and the message says how far it got."""


@dataclasses.dataclass
class RescoreSummary:
    """What a bulk re-scoring did. failed: (patient_id, reason) in input order; first_seq/last_seq:
    the ledger range its records took (None when nothing was written); timings: seconds spent in
    the feature read, the model, building records and the ledger's appends; score_ids: what was
    written, in ledger order (not in to_dict)."""

    model_name: str
    model_version: str
    patients: int
    scored: int = 0
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    first_seq: int | None = None
    last_seq: int | None = None
    seconds: float = 0.0
    timings: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"read_s": 0.0, "predict_s": 0.0, "record_s": 0.0, "ledger_s": 0.0})
    score_ids: list[str] = dataclasses.field(default_factory=list, repr=False)  # in ledger order

    def line(self) -> str:
        """The run in one line."""
        seqs = f"ledger seq {self.first_seq}-{self.last_seq}" if self.first_seq is not None else "nothing written"
        t = self.timings
        return (f"re-scored {self.scored}/{self.patients} patients with {self.model_name} v{self.model_version} "
                f"in {self.seconds:.1f} s ({seqs}); {len(self.failed)} failed; "
                f"read {t['read_s']:.1f} s, predict {t['predict_s']:.1f} s, records {t['record_s']:.1f} s, "
                f"ledger {t['ledger_s']:.1f} s")

    def reasons(self) -> dict[str, int]:
        """How many patients failed for each kind of reason (the reason without its patient id)."""
        counts: dict[str, int] = {}
        for pid, why in self.failed:
            kind = why.replace(repr(pid), "PATIENT")
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        return {"model": {"name": self.model_name, "version": self.model_version}, "patients": self.patients,
                "scored": self.scored, "failed": len(self.failed), "failures": [list(f) for f in self.failed],
                "ledger_seq": [self.first_seq, self.last_seq], "seconds": round(self.seconds, 3),
                "timings": {k: round(v, 3) for k, v in self.timings.items()}}


class _Clocked:
    """Adds the seconds spent in calls of `fn` to timings[key]."""

    def __init__(self, fn: Callable[..., Any], timings: dict[str, float], key: str) -> None:
        self._fn, self._timings, self._key = fn, timings, key

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._fn(*args, **kwargs)
        finally:
            self._timings[self._key] += time.perf_counter() - t0


class _ClockedPyfunc:
    def __init__(self, pyfunc: Any, timings: dict[str, float]) -> None:
        self._pyfunc = pyfunc
        self.predict = _Clocked(pyfunc.predict, timings, "predict_s")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pyfunc, name)


def _clocked(scorer: Any, timings: dict[str, float]) -> Any:
    """A shallow copy of the scorer whose feature read and model call are timed: the same
    score_patients runs, and the scorer the API holds is left as it is."""
    timed = copy.copy(scorer)
    if scorer.read_features is not None:
        timed.read_features = _Clocked(scorer.read_features, timings, "read_s")
    if hasattr(scorer.model, "pyfunc"):  # a ChampionModel: time its pyfunc's predict on a copy
        timed.model = copy.copy(scorer.model)
        timed.model.pyfunc = _ClockedPyfunc(scorer.model.pyfunc, timings)
    return timed


def _check_options(patient_ids: Sequence[str], chunk: int, requested_by: str) -> None:
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"chunk must be a whole number >= 1 (got {chunk!r}); 1000 suits most stores")
    if not isinstance(requested_by, str) or not requested_by.strip():
        raise ConfigError("requested_by must be a non-empty name (it is written to every record)")
    bad = [p for p in patient_ids if not isinstance(p, str) or not p]
    if bad:
        raise DataError(f"{len(bad)} patient id(s) are not non-empty strings (first: {bad[0]!r})")


def _score(timed: Any, ids: list[str], requested_by: str, timings: dict[str, float],
           out: list[tuple[str, Any]]) -> None:
    """Score `ids`, appending (patient_id, record or exception) to out. A chunk that fails as a
    whole (a predict that chokes on one row) is halved until the patient that causes it is alone,
    so the valid records around it are still written."""
    before = timings["read_s"] + timings["predict_s"]
    t0 = time.perf_counter()
    try:
        results = timed.score_patients([(pid, requested_by) for pid in ids])
    except (NotAvailableError, ConfigError):
        raise  # no store, no model: every chunk would fail the same way
    except Exception as exc:  # noqa: BLE001 - isolated below, reported per patient
        timings["record_s"] += max(0.0, time.perf_counter() - t0 - (timings["read_s"] + timings["predict_s"] - before))
        if len(ids) == 1:
            out.append((ids[0], exc))
            return
        half = len(ids) // 2
        _score(timed, ids[:half], requested_by, timings, out)
        _score(timed, ids[half:], requested_by, timings, out)
        return
    timings["record_s"] += max(0.0, time.perf_counter() - t0 - (timings["read_s"] + timings["predict_s"] - before))
    out.extend(zip(ids, results, strict=True))


def rescore_all(scorer: Any, ledger: Any, patient_ids: Sequence[str], *, chunk: int = 1000,
                requested_by: str = REQUESTED_BY, progress: ProgressFn | None = None) -> RescoreSummary:
    """Score every patient in `patient_ids` with the scorer's champion and write each record to the ledger.

    scorer: serving.scoring.Scorer (its score_patients is what the API calls); ledger: an open,
    writable ledger. chunk: patients per online read, model call and ledger transaction. A patient
    that cannot be scored is listed in the summary with the reason; a store or model that cannot
    be used at all raises (NotAvailableError), and a ledger write that fails raises RescoreAborted
    naming what was already committed.
    """
    ids = list(patient_ids)
    _check_options(ids, chunk, requested_by)
    model = scorer.model
    summary = RescoreSummary(model_name=str(model.name), model_version=str(model.version), patients=len(ids))
    timings = summary.timings
    timed = _clocked(scorer, timings)
    started = time.perf_counter()
    done = 0
    for lo in range(0, len(ids), chunk):
        part = ids[lo:lo + chunk]
        scored: list[tuple[str, Any]] = []
        _score(timed, part, requested_by, timings, scored)
        records = [r for _, r in scored if not isinstance(r, Exception)]
        for pid, r in scored:
            if isinstance(r, Exception):
                summary.failed.append((pid, str(r) or type(r).__name__))
        if not records and lo == 0 and len(part) > 1 and all(
                not isinstance(r, FacesurvError) for _, r in scored):
            # the model fails on every patient of the first chunk alone: it is broken, not the data
            raise RescoreAborted(f"the champion failed on every patient of the first chunk "
                                 f"({summary.failed[0][1]}); nothing was written")
        if records:
            t0 = time.perf_counter()
            try:
                entries = ledger.append_many(records)
            except Exception as exc:
                written = (f"records up to ledger seq {summary.last_seq} ({summary.scored} patients) stay written"
                           if summary.scored else "nothing was written")
                raise RescoreAborted(f"ledger {_describe(ledger)} refused a write after {done}/{len(ids)} "
                                     f"patients: {exc}; {written}") from exc
            finally:
                timings["ledger_s"] += time.perf_counter() - t0
            if summary.first_seq is None:
                summary.first_seq = entries[0].seq
            summary.last_seq = entries[-1].seq
            summary.scored += len(entries)
            summary.score_ids.extend(e.score_id for e in entries)
        done += len(part)
        if progress is not None:
            progress(done, len(ids))
    summary.seconds = time.perf_counter() - started
    return summary


def _describe(ledger: Any) -> str:
    try:
        return str(ledger.describe())
    except Exception:  # noqa: BLE001 - only for the message
        return type(ledger).__name__


def store_patients(repo_dir: Path, params: Params) -> list[str]:
    """Every patient the feature store holds a row for (either view), sorted.

    Read from the views' offline rows (the parquet parts in the workspace's feature repo, or the
    scale profile's tables), key columns only: the online store has no entity listing, and what
    it holds was materialised from these rows. A patient written but not yet materialised is
    listed too, and the re-scoring reports it as lacking online features.
    """
    from features.feature_repo.schema import CLINICAL_VIEW, LATENT_VIEW
    from features.store.offline import rows_written_since

    repo_dir = Path(repo_dir)
    if params.profile == "local" and not (repo_dir / "feature_store.yaml").is_file():
        raise NotAvailableError(f"no feature repo at {repo_dir}: run `facesurv features apply` and materialize first")
    ids: set[str] = set()
    for view in (CLINICAL_VIEW, LATENT_VIEW):
        ids.update(str(p) for p in rows_written_since(repo_dir, params, view, None)[3])
    return sorted(ids)
