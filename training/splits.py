"""Patient-level, event-stratified, seeded train/test split, frozen on first use.

The test patients are chosen once and recorded (with the data versions they came from) in a
JSON file; later trainings reuse exactly those patients as the test set, with any new
patients going to training, so a challenger and the champion are compared on the same
people.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ground.errors import DataError
from ground.types import check_survival_target


@dataclass(frozen=True)
class FrozenSplit:
    test_patient_ids: tuple[str, ...]
    seed: int
    test_fraction: float
    data_versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""

    @property
    def split_id(self) -> str:
        """Short content hash of the test patient set: equal ids mean the same test patients."""
        return hashlib.sha256("\n".join(sorted(self.test_patient_ids)).encode()).hexdigest()[:16]

    def to_json(self) -> str:
        d = asdict(self)
        d["test_patient_ids"] = list(self.test_patient_ids)
        d["split_id"] = self.split_id
        return json.dumps(d, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FrozenSplit:
        d = json.loads(text)
        d.pop("split_id", None)
        d["test_patient_ids"] = tuple(d["test_patient_ids"])
        return cls(**d)


def draw_split(patient_ids: np.ndarray, event: np.ndarray, *, test_fraction: float, seed: int,
               data_versions: Mapping[str, str] | None = None) -> FrozenSplit:
    """Choose test patients: within each event stratum a seeded permutation, round(fraction * n) to test.

    patient_ids (n,) may repeat (several rows per patient); a patient's stratum is 'had an event'.
    """
    ids = pd.Series(np.asarray(patient_ids).astype(str))
    per_patient = pd.Series(np.asarray(event, dtype=bool)).groupby(ids).max()
    rng = np.random.default_rng(seed)
    test: list[str] = []
    for flag in (True, False):
        group = np.sort(per_patient.index[per_patient.to_numpy() == flag].to_numpy())
        k = int(round(test_fraction * len(group)))
        test += rng.permutation(group)[:k].tolist()
    return FrozenSplit(tuple(sorted(test)), seed, test_fraction, dict(data_versions or {}),
                       dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))


def apply_split(df: pd.DataFrame, split: FrozenSplit) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, test_idx) positional indices of df; rows of a test patient are all in test."""
    is_test = df["patient_id"].astype(str).isin(set(split.test_patient_ids)).to_numpy()
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def read_split(path: Path) -> FrozenSplit:
    """The frozen split saved at `path`; DataError when there is none."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no frozen test split; train once (facesurv train) to draw and save it")
    return FrozenSplit.from_json(path.read_text(encoding="utf-8"))


def split_frame(df: pd.DataFrame, *, test_fraction: float, seed: int, path: Path | None,
                data_versions: Mapping[str, str] | None = None, split: FrozenSplit | None = None
                ) -> tuple[np.ndarray, np.ndarray, FrozenSplit]:
    """Split a training frame by `split`, else by the frozen split at `path` (drawn and saved there
    when absent), else by a split drawn from `seed` and saved nowhere."""
    if len(df) == 0:
        raise DataError("training data is empty (0 rows); import a cohort or pass --data FILE")
    if "patient_id" not in df.columns:
        raise DataError("training data has no patient_id column; splits are made per patient")
    _, event = check_survival_target(df["time_days"].to_numpy(), df["event"].to_numpy(), what="training data")
    if split is None and path is not None and Path(path).is_file():
        split = read_split(path)
    if split is None:
        split = draw_split(df["patient_id"].to_numpy(), event, test_fraction=test_fraction, seed=seed,
                           data_versions=data_versions)
        if path is not None:
            from ground.atomic import atomic_path

            with atomic_path(path) as tmp:
                tmp.write_text(split.to_json(), encoding="utf-8")
    train_idx, test_idx = apply_split(df, split)
    if len(test_idx) == 0:
        where = f", {path}" if path is not None else ""
        raise DataError(f"none of the frozen test patients (split {split.split_id}{where}) are in this data; "
                        "train on the cohort the split was drawn from, or delete that file to draw a new split")
    if len(train_idx) == 0:
        raise DataError("the training part of the split is empty; add patients or lower training.test_fraction")
    if not event[test_idx].any():
        raise DataError(f"the test split {split.split_id} has no events; it cannot rank patients — "
                        "add patients or delete the split file to redraw it")
    return train_idx, test_idx, split
