"""Alignment outcomes per group (features.fairness)."""

from __future__ import annotations

import pandas as pd
import pytest

from features.fairness import aligned_by_group


def test_alignment_outcomes_are_counted_per_group() -> None:
    frame = pd.DataFrame({"photo_sex": ["female", "female", "male"], "race_group": ["a", "b", "a"],
                          "aligned": [True, False, True]})
    got = aligned_by_group(frame, ("photo_sex", "race_group"))
    assert got["overall"] == {"photos": 3, "aligned": 2, "quarantined": 1, "rate": 0.6667}
    assert got["race_group"]["b"] == {"photos": 1, "aligned": 0, "quarantined": 1, "rate": 0.0}
    assert got["photo_sex"]["female"] == {"photos": 2, "aligned": 1, "quarantined": 1, "rate": 0.5}


def test_a_missing_column_is_named() -> None:
    with pytest.raises(ValueError, match="needs the columns race_group"):
        aligned_by_group(pd.DataFrame({"aligned": [True]}), ("race_group",))
