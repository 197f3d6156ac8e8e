"""Online features from the workspace's Feast store, with each feature view's event time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from features.feature_repo.schema import LATENT_PROVENANCE
from ground.config import Params
from serving.scoring import OnlineFeatures

# face_latent columns that describe how the latent was made and by which run: lineage, not model inputs
LINEAGE_COLUMNS = frozenset(LATENT_PROVENANCE)
JOIN_KEY = "patient_id"
# Patients per get_online_features call. The SQLite store puts one bound parameter per patient in a
# single IN (...) (SQLite allows 32766), and a bounded call keeps a bulk read's protobuf response
# small; per-call overhead is about a millisecond, so larger chunks gain nothing measurable.
READ_CHUNK = 2000
# ValueProto fields whose Python value is the field itself (to_dict's generic conversion does the same)
_SCALARS = frozenset(("double_val", "float_val", "int32_val", "int64_val", "string_val", "bool_val", "bytes_val"))
_LISTS = frozenset(("double_list_val", "float_list_val", "int32_list_val", "int64_list_val", "string_list_val",
                    "bool_list_val", "bytes_list_val"))


def _column(values: Any, feature_type: Any) -> list[Any]:
    """One response column as Python values, as OnlineResponse.to_dict converts them, without its
    per-value dispatch: scalars and lists are read straight off the proto; anything rarer (timestamps,
    maps, sets, JSON) goes through Feast's own converter."""
    from feast.type_map import feast_value_type_to_python_type

    out: list[Any] = []
    append = out.append
    for v in values:
        kind = v.WhichOneof("val")
        if kind is None:
            append(None)
        elif kind in _SCALARS:
            append(getattr(v, kind))
        elif kind in _LISTS:
            append(list(getattr(v, kind).val))
        else:
            append(feast_value_type_to_python_type(v, feature_type))
    return out


class FeastFeatureReader:
    """Reads the feature service for a batch of patients, `chunk` patients per get_online_features call.

    The FeatureStore and the feature service are opened once here (importing feast takes seconds),
    not per request. Event times are reported per feature view (every feature of a view row shares
    one). The response is converted column by column from its protobuf (see `_column`): for a bulk
    read OnlineResponse.to_dict's per-value conversion was a fifth of the time.
    """

    def __init__(self, repo_dir: Path, params: Params, *, store: Any = None, chunk: int = READ_CHUNK) -> None:
        from feast.online_response import TIMESTAMP_POSTFIX

        from features.store.repo import open_store

        if chunk < 1:
            raise ValueError(f"chunk must be >= 1 (got {chunk})")
        self.store = store or open_store(repo_dir, params)
        self.feature_service = params.features.feature_service
        self.service = self.store.get_feature_service(self.feature_service)
        self.chunk = chunk
        # view name -> the feature whose timestamp stands for the view's row
        self._view_feature = {p.name_to_use(): p.features[0].name
                              for p in self.service.feature_view_projections if p.features}
        self._ts = TIMESTAMP_POSTFIX
        self._stamps: dict[int, str] = {}  # unix seconds -> ISO text; a cohort shares few event times

    def _read(self, patient_ids: Sequence[str]) -> tuple[dict[str, list[Any]], dict[str, list[int]]]:
        """(feature -> values, view -> event time in unix seconds, 0 where the view has no row)."""
        resp = self.store.get_online_features(features=self.service,
                                              entity_rows=[{JOIN_KEY: p} for p in patient_ids])
        proto = resp.proto
        names = list(proto.metadata.feature_names.val)
        types = getattr(resp, "_feature_types", {}) or {}
        index = {n: i for i, n in enumerate(names)}
        cols = {n: _column(proto.results[i].values, types.get(n)) for i, n in enumerate(names) if n != JOIN_KEY}
        stamps = {view: [ts.seconds for ts in proto.results[index[f]].event_timestamps]
                  for view, f in self._view_feature.items() if f in index}
        return cols, stamps

    def _iso(self, sec: int) -> str:
        text = self._stamps.get(sec)
        if text is None:
            text = self._stamps[sec] = dt.datetime.fromtimestamp(int(sec), dt.UTC).isoformat()
        return text

    def __call__(self, patient_ids: Sequence[str]) -> list[OnlineFeatures | None]:
        out: list[OnlineFeatures | None] = []
        for lo in range(0, len(patient_ids), self.chunk):
            out.extend(self._convert(patient_ids[lo:lo + self.chunk]))
        return out

    def _convert(self, patient_ids: Sequence[str]) -> list[OnlineFeatures | None]:
        if not patient_ids:
            return []
        cols, stamps = self._read(patient_ids)
        inputs = [(n, c) for n, c in cols.items() if n not in LINEAGE_COLUMNS]
        lineage = [(n, c) for n, c in cols.items() if n in LINEAGE_COLUMNS]
        views = list(stamps.items())
        out: list[OnlineFeatures | None] = []
        for i in range(len(patient_ids)):
            # Feast gives 0 when the view has no row for this patient
            row_stamps = {view: self._iso(secs[i]) for view, secs in views if secs[i]}
            if not row_stamps:
                out.append(None)
                continue
            out.append(OnlineFeatures({n: c[i] for n, c in inputs}, row_stamps, self.feature_service,
                                      {n: c[i] for n, c in lineage}))
        return out
