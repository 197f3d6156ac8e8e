from __future__ import annotations

import numpy as np
import pytest

from ground.errors import DataError
from ground.types import check_survival_target


def test_valid_target_is_normalised() -> None:
    t, e = check_survival_target([1, 2.5, 3], [1, 0, True])
    assert t.dtype == np.float64 and e.dtype == bool
    assert e.tolist() == [True, False, True]


@pytest.mark.parametrize(
    ("time", "event", "match"),
    [
        ([], [], "no patients"),
        ([1, 2], [1], "time has 2 values but event has 1"),
        ([1, 0, 3], [1, 1, 0], r"time must be > 0 days; 1 values are not \(first at row 1"),
        ([1, -2, 3], [1, 1, 0], "time must be > 0 days"),
        ([1, np.nan], [1, 0], "missing or infinite values"),
        ([1, np.inf], [1, 0], "missing or infinite values"),
        ([1, 2], [1, 2], r"event must be 0 \(censored\) or 1"),
        ([1, 2], ["a", "b"], "event must be 0/1 or true/false"),
        (["x", "y"], [1, 0], "time must be numeric"),
        ([1, 2], [0, 0], "all 2 patients are censored"),
        ([[1, 2]], [[1, 0]], "must be 1-D"),
    ],
)
def test_bad_targets(time: object, event: object, match: str) -> None:
    with pytest.raises(DataError, match=match):
        check_survival_target(time, event)


def test_all_censored_allowed_when_asked() -> None:
    _, e = check_survival_target([1, 2], [0, 0], allow_all_censored=True)
    assert not e.any()
