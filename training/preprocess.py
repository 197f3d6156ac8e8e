"""Feature preparation fitted inside each model and saved with it.

Numeric covariates are standardised, categories one-hot encoded against their first
(reference) level, and latents standardised per dimension. The same fitted object turns a
serving request into the matrix the model saw in training, so train/serve skew cannot creep
in through a separately maintained transform.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from features.feature_repo.schema import LATENT_PROVENANCE
from ground.errors import DataError
from ground.types import CLINICAL_CORE_COVARIATES, CLINICAL_ID_COLUMNS, SURVIVAL_COLUMNS

LATENT_COLUMN = "latent"
# Provenance that travels with the latents from the feature store (how a photo was embedded and
# by which run, not a patient property) and the retrieval timestamps: never covariates.
PROVENANCE_COLUMNS = (*LATENT_PROVENANCE, "event_timestamp", "written_at")
_NON_FEATURES = {*CLINICAL_ID_COLUMNS, *SURVIVAL_COLUMNS, LATENT_COLUMN, *PROVENANCE_COLUMNS}


def clinical_feature_columns(df: pd.DataFrame, *, base: str | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(numeric, categorical) clinical covariates of a training frame.

    With a known base dataset the cohort's declared covariates are used; otherwise they are
    inferred from dtypes (numbers are numeric, everything else categorical), skipping ids,
    timestamps, the survival label, the latent column and the latents' provenance columns.
    """
    if base is not None:
        from features.cohort import covariate_columns

        numeric, categorical = covariate_columns(base)
        numeric = ("age", *numeric)
        categorical = ("sex", "cancer_type", *categorical)
        missing = [c for c in (*numeric, *categorical) if c not in df.columns]
        if missing:
            raise DataError(f"training data lacks the {base} covariates {missing}; "
                            "pass the table written by `facesurv cohort import` or set cohort.base")
        return tuple(numeric), tuple(categorical)
    inferred_numeric: list[str] = []
    inferred_categorical: list[str] = []
    for col in df.columns:
        if col in _NON_FEATURES or col.endswith("_at") or pd.api.types.is_datetime64_any_dtype(df[col]):
            continue
        if pd.api.types.is_bool_dtype(df[col]) or not pd.api.types.is_numeric_dtype(df[col]):
            inferred_categorical.append(col)
        else:
            inferred_numeric.append(col)
    for core in CLINICAL_CORE_COVARIATES:
        if core not in df.columns:
            raise DataError(f"training data lacks the clinical column {core!r}; "
                            "every clinical table has age, sex and cancer_type")
    return tuple(inferred_numeric), tuple(inferred_categorical)


def latent_matrix(df: pd.DataFrame, *, what: str = "training data") -> np.ndarray:
    """Stack the per-row `latent` arrays into (n, d) float64; every row must have the same d."""
    if LATENT_COLUMN not in df.columns:
        raise DataError(f"{what} has no `latent` column; project the photos first (facesurv project) "
                        "or train the clinical models only")
    rows = df[LATENT_COLUMN].tolist()
    if not rows:
        return np.zeros((0, 0))
    missing = [i for i, r in enumerate(rows) if r is None or (np.ndim(r) == 0)]
    if missing:
        raise DataError(f"{what}: {len(missing)} rows have no latent (first at row {missing[0]}); "
                        "drop patients without a projected photo")
    dims = {int(np.size(r)) for r in rows}
    if len(dims) != 1:
        raise DataError(f"{what}: latents have different lengths {sorted(dims)}; all must have the same dimension")
    z = np.asarray(np.stack([np.asarray(r, dtype=np.float64).ravel() for r in rows]))
    bad = ~np.isfinite(z).all(axis=1)
    if bad.any():
        raise DataError(f"{what}: {int(bad.sum())} latents contain NaN or infinite values "
                        f"(first at row {int(np.flatnonzero(bad)[0])}); re-project those photos")
    return z


@dataclass
class Preprocessor:
    """Fitted transform: DataFrame -> (n, p) float64 design matrix."""

    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    use_latent: bool = False
    means_: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scales_: np.ndarray = field(default_factory=lambda: np.zeros(0))
    levels_: dict[str, list[str]] = field(default_factory=dict)
    latent_dim_: int = 0

    def _raw(self, df: pd.DataFrame, what: str) -> tuple[np.ndarray, np.ndarray]:
        missing = [c for c in (*self.numeric, *self.categorical) if c not in df.columns]
        if missing:
            raise DataError(f"{what} lacks the columns {missing}; pass every covariate the model was trained on")
        blocks = []
        if self.numeric:
            num = df[list(self.numeric)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
            bad = ~np.isfinite(num)
            if bad.any():
                r, c = (int(v[0]) for v in np.nonzero(bad))
                raise DataError(f"{what}: covariate {self.numeric[c]!r} has {int(bad[:, c].sum())} missing or "
                                f"non-numeric values (first at row {r}); fill or drop those rows before training")
            blocks.append(num)
        if self.use_latent:
            blocks.append(latent_matrix(df, what=what))
        cont = np.hstack(blocks) if blocks else np.zeros((len(df), 0))
        cats = df[list(self.categorical)] if self.categorical else pd.DataFrame(index=df.index)
        for col in self.categorical:
            if cats[col].isna().any():
                r = int(np.flatnonzero(cats[col].isna().to_numpy())[0])
                raise DataError(f"{what}: covariate {col!r} has {int(cats[col].isna().sum())} missing values "
                                f"(first at row {r}); fill or drop those rows before training")
        return cont, cats.astype(str).to_numpy() if self.categorical else np.zeros((len(df), 0), dtype=object)

    def fit(self, df: pd.DataFrame, *, what: str = "training data") -> Preprocessor:
        cont, cats = self._raw(df, what)
        self.latent_dim_ = latent_matrix(df, what=what).shape[1] if self.use_latent else 0
        self.means_ = cont.mean(axis=0) if len(cont) else np.zeros(cont.shape[1])
        sd = cont.std(axis=0) if len(cont) else np.ones(cont.shape[1])
        self.scales_ = np.where(sd > 1e-12, sd, 1.0)  # a constant column stays zero, not NaN
        self.levels_ = {col: sorted(set(cats[:, j].tolist())) for j, col in enumerate(self.categorical)}
        return self

    def transform(self, df: pd.DataFrame, *, what: str = "input") -> np.ndarray:
        """(n, p) design matrix; unseen categories fall on the reference level (all zeros)."""
        cont, cats = self._raw(df, what)
        if self.use_latent and cont.shape[1] != self.means_.shape[0]:
            raise DataError(f"{what}: latent has {cont.shape[1] - len(self.numeric)} dimensions, "
                            f"the model was trained on {self.latent_dim_}")
        parts = [(cont - self.means_) / self.scales_]
        for j, col in enumerate(self.categorical):
            levels = self.levels_[col][1:]  # first level is the reference (no intercept in Cox)
            parts.append((cats[:, j][:, None] == np.asarray(levels, dtype=object)[None, :]).astype(np.float64))
        return np.hstack(parts) if parts else np.zeros((len(df), 0))

    @property
    def feature_names(self) -> list[str]:
        names = list(self.numeric)
        if self.use_latent:
            names += [f"latent_{i}" for i in range(self.latent_dim_)]
        for col in self.categorical:
            names += [f"{col}={lv}" for lv in self.levels_[col][1:]]
        return names

    @property
    def n_features(self) -> int:
        return len(self.feature_names)


def check_events_per_feature(n_events: int, n_features: int, *, minimum: float, model: str) -> None:
    """Unpenalised Cox models need enough events per coefficient to be estimable."""
    if n_features == 0:
        raise DataError(f"{model}: no covariates to fit; the training table has no usable feature columns")
    if n_events < minimum * n_features:
        raise DataError(
            f"{model}: too few events for the number of features ({n_events} events for {n_features} features; "
            f"training.min_events_per_feature={minimum:g} needs at least {int(np.ceil(minimum * n_features))}); "
            "add patients or drop covariates"
        )


def patients_for_events(df: pd.DataFrame, *, base: str, patients: int, test_fraction: float,
                        min_events_per_feature: float) -> tuple[int, str] | None:
    """None when `patients` drawn from the cohort `df` (0: all of them) leave the training part
    enough events for the clinical CoxPH by check_events_per_feature; otherwise (the patients to
    use instead, capped at the cohort's size, and why). The drawn outcomes keep df's event rate."""
    import math

    if patients > len(df):
        return len(df), f"{base} has {len(df)} patients, fewer than the {patients} asked for"
    features = Preprocessor(*clinical_feature_columns(df, base=base)).fit(df).n_features
    rate = float(df["event"].mean())
    patients = patients or len(df)
    try:
        check_events_per_feature(int(patients * rate * (1 - test_fraction)), features,
                                 minimum=min_events_per_feature, model="coxph_clinical")
        return None
    except DataError:
        pass
    needed = math.ceil(min_events_per_feature * features / (1 - test_fraction))
    why = (f"{base}: {patients} patients hold about {patients * rate:.0f} events ({rate:.0%} event rate), "
           f"too few for {features} clinical features at {min_events_per_feature:g} events each "
           f"(the dataset has {len(df)})")
    return min(len(df), math.ceil(needed / rate * 1.1)), why


def as_tuple(cols: Sequence[str]) -> tuple[str, ...]:
    return tuple(str(c) for c in cols)
