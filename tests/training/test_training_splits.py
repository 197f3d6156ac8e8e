"""Patient-level, event-stratified, seeded, frozen splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ground.errors import DataError
from training.splits import FrozenSplit, draw_split, split_frame


def test_split_is_stratified_and_seeded(cohort_df):
    ev = cohort_df["event"].to_numpy(bool)
    a = draw_split(cohort_df["patient_id"].to_numpy(), ev, test_fraction=0.25, seed=3)
    b = draw_split(cohort_df["patient_id"].to_numpy(), ev, test_fraction=0.25, seed=3)
    c = draw_split(cohort_df["patient_id"].to_numpy(), ev, test_fraction=0.25, seed=4)
    assert a.test_patient_ids == b.test_patient_ids and a.split_id == b.split_id and a.split_id != c.split_id
    test = cohort_df["patient_id"].isin(a.test_patient_ids).to_numpy()
    assert abs(ev[test].sum() - round(0.25 * ev.sum())) == 0
    assert abs((~ev)[test].sum() - round(0.25 * (~ev).sum())) == 0


def test_patients_never_straddle_the_split():
    df = pd.DataFrame({"patient_id": ["a", "a", "b", "c", "c", "d"], "time_days": [1.0, 2, 3, 4, 5, 6],
                       "event": [1, 0, 1, 0, 1, 0]})
    tr, te, split = split_frame(df, test_fraction=0.5, seed=0, path=None)
    assert set(df.patient_id.iloc[tr]).isdisjoint(set(df.patient_id.iloc[te]))


def test_frozen_split_reused_and_new_patients_go_to_training(cohort_df, tmp_path):
    path = tmp_path / "split.json"
    tr1, te1, s1 = split_frame(cohort_df, test_fraction=0.25, seed=0, path=path,
                               data_versions={"clinical": "v1"})
    assert path.is_file() and FrozenSplit.from_json(path.read_text()).data_versions == {"clinical": "v1"}
    extra = cohort_df.head(10).assign(patient_id=[f"new-{i}" for i in range(10)])
    grown = pd.concat([cohort_df, extra], ignore_index=True)
    tr2, te2, s2 = split_frame(grown, test_fraction=0.5, seed=9, path=path)
    assert s2.split_id == s1.split_id
    np.testing.assert_array_equal(te2, te1)
    assert set(grown.patient_id.iloc[tr2]) >= {f"new-{i}" for i in range(10)}


def test_frozen_split_that_matches_no_patient_is_an_error(cohort_df, tmp_path):
    path = tmp_path / "split.json"
    path.write_text(FrozenSplit(("x", "y"), 0, 0.25).to_json())
    with pytest.raises(DataError, match="none of the frozen test patients"):
        split_frame(cohort_df, test_fraction=0.25, seed=0, path=path)
