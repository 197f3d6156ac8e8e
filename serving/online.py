"""Online features from the workspace's Feast store, with each feature view's event time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ground.config import Params
from serving.scoring import OnlineFeatures

# face_latent columns that describe how the latent was made: lineage, not model inputs
LINEAGE_COLUMNS = frozenset(("space", "steps", "perceptual_loss", "mse", "generator_sha256",
                             "generator_is_random_init", "generator_version", "perceptual_network", "encoder_sha256",
                             "perceptual_is_stand_in", "aligner_version", "photo_id", "photo_sha256"))
JOIN_KEY = "patient_id"


class FeastFeatureReader:
    """Reads the feature service for a batch of patients in one get_online_features call.

    The FeatureStore is opened once here (importing feast takes seconds), not per request.
    Event times are reported per feature view (every feature of a view row shares one).
    """

    def __init__(self, repo_dir: Path, params: Params, *, store: Any = None) -> None:
        from feast.online_response import TIMESTAMP_POSTFIX

        from features.store.repo import open_store

        self.store = store or open_store(repo_dir, params)
        self.feature_service = params.features.feature_service
        self.service = self.store.get_feature_service(self.feature_service)
        # view name -> the feature whose timestamp stands for the view's row
        self._view_ts = {p.name_to_use(): p.features[0].name + TIMESTAMP_POSTFIX
                         for p in self.service.feature_view_projections if p.features}
        self._ts = TIMESTAMP_POSTFIX

    def __call__(self, patient_ids: Sequence[str]) -> list[OnlineFeatures | None]:
        resp = self.store.get_online_features(features=self.service,
                                              entity_rows=[{JOIN_KEY: p} for p in patient_ids])
        cols = resp.to_dict(include_event_timestamps=True)
        names = [c for c in cols if not c.endswith(self._ts) and c != JOIN_KEY]
        memo: dict[int, str] = {}
        out: list[OnlineFeatures | None] = []
        for i in range(len(patient_ids)):
            stamps = {}
            for view, col in self._view_ts.items():
                sec = cols[col][i] if col in cols else 0
                if sec:  # Feast gives 0 when the view has no row for this patient
                    if sec not in memo:
                        memo[sec] = dt.datetime.fromtimestamp(int(sec), dt.UTC).isoformat()
                    stamps[view] = memo[sec]
            if not stamps:
                out.append(None)
                continue
            values = {n: cols[n][i] for n in names if n not in LINEAGE_COLUMNS}
            lineage = {n: cols[n][i] for n in names if n in LINEAGE_COLUMNS}
            out.append(OnlineFeatures(values, stamps, self.feature_service, lineage))
        return out
