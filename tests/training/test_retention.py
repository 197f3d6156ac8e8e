"""The oracle retention: the share of the oracle's signal above chance a model keeps."""

from __future__ import annotations

import math

import pytest

from training.retention import retention_vs_oracle


def test_retention_is_the_ratio_of_gains_above_chance() -> None:
    assert retention_vs_oracle(0.7, 0.9) == pytest.approx(0.5)
    assert retention_vs_oracle(0.9, 0.9) == pytest.approx(1.0)
    assert retention_vs_oracle(0.4, 0.9) == pytest.approx(-0.25)  # worse than chance: negative, not clipped


@pytest.mark.parametrize(("c_model", "c_oracle"), [(0.7, 0.5), (0.7, 0.45), (None, 0.8), (0.7, None),
                                                   (math.nan, 0.8), (0.7, math.nan)])
def test_retention_is_undefined_without_an_oracle_signal_or_a_c_index(c_model, c_oracle) -> None:
    assert retention_vs_oracle(c_model, c_oracle) is None


@pytest.mark.parametrize(("c_model", "c_oracle", "name"), [(1.2, 0.8, "c_model"), (0.7, -0.1, "c_oracle"),
                                                           (0.7, math.inf, "c_oracle")])
def test_a_value_that_is_no_c_index_is_refused(c_model, c_oracle, name) -> None:
    with pytest.raises(ValueError, match=rf"{name} = .* is not a C-index"):
        retention_vs_oracle(c_model, c_oracle)
