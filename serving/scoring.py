"""The scoring glue: champion model + online features (+ a photo embedder) -> a lineage record.

Everything slow (the MLflow pyfunc, the feature store, the generator) is loaded once by the
server's entry point and handed to `Scorer`; a request only reads features, predicts and
builds the record the app writes to the ledger before it answers.

The record is the score's whole provenance (docs/serving.md lists the fields); the API's
response is derived from it (`response_from_record`), so the score a client got and the
score the ledger holds cannot differ.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ground.errors import DataError, NotAvailableError
from ground.workspace import code_version

_SURVIVAL_COL = re.compile(r"^survival_(\d+)d$")
# online-store columns that describe how a stored latent was projected
PROJECTION_LINEAGE = ("space", "steps", "perceptual_loss", "mse", "perceptual_network", "perceptual_is_stand_in",
                      "encoder_sha256")


@dataclasses.dataclass(frozen=True)
class OnlineFeatures:
    """One patient's feature values as the online store returned them.

    values: model input column -> value; event_timestamps: feature view -> ISO event time
    of the row the values came from; lineage: what produced a stored latent (photo_sha256,
    generator_sha256 and generator_version, aligner_version, projection settings and loss), when known.
    """

    values: dict[str, Any]
    event_timestamps: dict[str, str]
    feature_service: str
    lineage: dict[str, Any] = dataclasses.field(default_factory=dict)


# Any callable (patient_ids) -> one OnlineFeatures per id, None for a patient the store lacks.
# Batched on purpose: under load one online read serves a whole micro-batch of requests.
FeatureReader = Callable[[Sequence[str]], list[OnlineFeatures | None]]


class UnknownPatient(DataError):
    """The online store has no features for this patient."""


@dataclasses.dataclass(frozen=True)
class EmbeddedPhoto:
    """A new photo aligned and projected: latent (latent_dim,) plus how it was made."""

    latent: list[float]
    lineage: dict[str, Any]


class PhotoRejected(DataError):
    """The photo cannot be scored (no face, several faces, too small...); the message says why."""


class PhotoEmbedder(Protocol):
    def __call__(self, image: bytes) -> EmbeddedPhoto: ...


class DataFrameFeatureReader:
    """Online features from an in-memory table keyed by patient_id (tests, benchmarks, and a
    workspace without a feature store). `timestamp_column` gives each row's event time."""

    def __init__(self, df: Any, *, feature_columns: list[str], timestamp_column: str,
                 feature_service: str, view: str = "clinical") -> None:
        self.feature_service = feature_service
        self.view = view
        self._rows: dict[str, tuple[dict[str, Any], str]] = {}
        for rec in df[["patient_id", timestamp_column, *feature_columns]].to_dict("records"):
            ts = rec[timestamp_column]
            ts = ts.isoformat() if hasattr(ts, "isoformat") else str(ts)
            self._rows[str(rec["patient_id"])] = ({c: rec[c] for c in feature_columns}, ts)

    def __call__(self, patient_ids: Sequence[str]) -> list[OnlineFeatures | None]:
        out: list[OnlineFeatures | None] = []
        for pid in patient_ids:
            row = self._rows.get(pid)
            out.append(None if row is None else
                       OnlineFeatures(dict(row[0]), {self.view: row[1]}, self.feature_service))
        return out


@dataclasses.dataclass
class ChampionModel:
    """The loaded pyfunc and where it came from in the registry."""

    pyfunc: Any
    name: str
    version: str
    alias: str
    run_id: str | None
    uri: str
    input_columns: list[str] | None  # from the model signature, when it has one
    # sha256 of the artifact manifest the files were verified against (training.integrity)
    artifacts_sha256: str | None = None

    def predict(self, frame: Any) -> Any:
        return self.pyfunc.predict(frame)


def load_champion(model_name: str, *, tracking_uri: str, alias: str = "champion") -> ChampionModel:
    """Load `models:/<model_name>@<alias>` once, through a client of `tracking_uri` (MLflow's global
    tracking URI is left as it is).

    The version's files are downloaded and checked against the sha256 manifest recorded in the
    registry at training time before MLflow loads (and so executes) anything; a changed, missing
    or extra file, or a version without a manifest, raises ArtifactIntegrityError naming it.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from training.integrity import load_verified_pyfunc

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        mv = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        raise NotAvailableError(f"no model {model_name!r} with alias {alias!r} in {tracking_uri}; "
                                "train and promote one first (`facesurv train`)") from None
    # pinned to the version the alias named just now, so what is verified is what is served
    verified = load_verified_pyfunc(client, name=model_name, version=str(mv.version), tracking_uri=tracking_uri)
    pyfunc = verified.pyfunc
    schema = pyfunc.metadata.get_input_schema()
    columns = list(schema.input_names()) if schema is not None and schema.has_input_names() else None
    return ChampionModel(pyfunc, model_name, str(mv.version), alias, mv.run_id, f"models:/{model_name}@{alias}",
                         columns, verified.manifest_sha256)


@dataclasses.dataclass(frozen=True)
class LineageContext:
    """What is fixed for the server's lifetime: code, params and the photo data version."""

    code_version: str
    params_hash: str
    photo_data: dict[str, Any]  # {"path", "dvc_md5", "git_rev"} of the DVC-tracked photos


def dvc_photo_version(data_dir: Path) -> dict[str, Any]:
    """md5 of the DVC-tracked photos (from photos.dvc) and the data repository's commit that
    holds that pointer (the workspace root is not a git repository: `data/` is)."""
    import yaml

    info: dict[str, Any] = {"path": str(data_dir / "photos"), "dvc_md5": None, "git_rev": None}
    dvc_file = data_dir / "photos.dvc"
    if dvc_file.is_file():
        try:
            outs = (yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}).get("outs") or [{}]
            info["dvc_md5"] = outs[0].get("md5")
        except (yaml.YAMLError, OSError, AttributeError):
            info["dvc_md5"] = "unreadable"
    if (data_dir / ".git").exists():
        info["git_rev"] = code_version(data_dir)
    return info


def request_hash(payload: Mapping[str, Any]) -> str:
    from serving.ledger import canonical_json

    return hashlib.sha256(canonical_json(dict(payload)).encode("utf-8")).hexdigest()


def _result_from_prediction(row: Mapping[str, Any]) -> dict[str, Any]:
    try:
        risk = float(row["risk_score"])
        pct = float(row["risk_percentile"])
    except KeyError as exc:
        raise RuntimeError(f"champion model output lacks column {exc.args[0]!r}") from None
    survival = sorted(
        ({"days": int(m.group(1)), "probability": float(v)}
         for k, v in row.items() if (m := _SURVIVAL_COL.match(str(k)))),
        key=lambda s: s["days"])
    return {"risk_score": risk, "risk_percentile": pct, "survival": survival}


def _generator_lineage(lin: Mapping[str, Any]) -> dict[str, Any]:
    """inputs.generator of a record: the weights' sha256, whether they are the random-init stand-in,
    and the generator registry's version name (None for a file, the stand-in, or a latent stored
    before versions were recorded)."""
    return {"sha256": lin.get("generator_sha256"), "is_random_init": lin.get("generator_is_random_init"),
            "version": lin.get("generator_version")}


def _summarise(value: Any) -> Any:
    # a 512-d latent would dwarf the record: keep its digest and length instead
    if isinstance(value, list | tuple) or hasattr(value, "tolist"):
        seq = list(value.tolist() if hasattr(value, "tolist") else value)
        return {"sha256": request_hash({"v": [float(x) for x in seq]}), "length": len(seq)}
    return value


def response_from_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """The API's score document: derived from the ledger record, never kept separately."""
    model = record["model"]
    return {
        "score_id": record["score_id"],
        "patient_id": record["patient_id"],
        "created_at": record["time"],
        **record["result"],
        "model": {k: model[k] for k in ("name", "version", "alias", "run_id")},
        "inputs": record["inputs"]["kind"],
    }


class Scorer:
    """Scores patients by id (online features) or from a new photo; builds lineage records."""

    def __init__(self, *, model: ChampionModel, read_features: FeatureReader | None,
                 context: LineageContext, embed_photo: PhotoEmbedder | None = None,
                 projection_settings: Mapping[str, Any] | None = None) -> None:
        self.model = model
        self.read_features = read_features
        self.context = context
        self.embed_photo = embed_photo
        self.projection_settings = dict(projection_settings or {})
        # stage name -> CPU seconds of score_patients' steps (serving.stage_timers); None: not measured
        self.timers: dict[str, float] | None = None

    def _lap(self, stage: str, since: float) -> float:
        now = time.thread_time()
        if self.timers is not None:
            self.timers[stage] = self.timers.get(stage, 0.0) + now - since
        return now

    def _predict(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        import pandas as pd

        # the model's columns picked while the frame is built, and its output read column-wise: pandas'
        # column selection and to_dict("records") were a tenth of a small batch's cost
        frame = pd.DataFrame([dict(r) for r in rows], columns=self.model.input_columns)
        pred = self.model.predict(frame)
        if len(pred) != len(rows):
            raise RuntimeError(f"champion model returned {len(pred)} rows for {len(rows)} inputs")
        columns = {str(k): pred[k].tolist() for k in pred.columns}
        return [_result_from_prediction(dict(zip(columns, values, strict=True)))
                for values in zip(*columns.values(), strict=True)]

    def _record(self, *, patient_id: str, request_sha: str, requested_by: str, inputs: dict[str, Any],
                result: dict[str, Any]) -> dict[str, Any]:
        m = self.model
        return {
            "score_id": uuid.uuid4().hex,
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
            "request_sha256": request_sha,
            "requested_by": requested_by,
            "patient_id": patient_id,
            "inputs": inputs,
            "model": {"name": m.name, "version": m.version, "alias": m.alias, "run_id": m.run_id, "uri": m.uri,
                      "artifacts_sha256": m.artifacts_sha256},
            "result": result,
            "code_version": self.context.code_version,
            "params_hash": self.context.params_hash,
        }

    def _online_inputs(self, feats: OnlineFeatures) -> dict[str, Any]:
        lin = feats.lineage
        return {
            "kind": "online_features",
            "feature_service": feats.feature_service,
            "feature_event_timestamps": feats.event_timestamps,
            "feature_values": {k: _summarise(v) for k, v in feats.values.items()},
            "photo": {"sha256": lin.get("photo_sha256"), "photo_id": lin.get("photo_id"),
                      "dvc": self.context.photo_data},
            "alignment": {"aligner_version": lin.get("aligner_version"),
                          "landmark_model_sha256": lin.get("landmark_model_sha256")},
            "generator": _generator_lineage(lin),
            "projection": {k: lin[k] for k in PROJECTION_LINEAGE if k in lin},
            # the OpenLineage run of the flow that wrote the latent (null: written before runs were named)
            "openlineage": {"run_id": lin.get("openlineage_run_id"), "namespace": lin.get("openlineage_namespace")},
        }

    def score_patients(self, requests: Sequence[tuple[str, str]]) -> list[dict[str, Any] | Exception]:
        """Lineage records for (patient_id, requested_by) pairs scored from the online store.

        One feature read and one model call for the whole batch; a patient the store lacks
        gets an UnknownPatient in its slot, the others are scored.
        """
        if self.read_features is None:
            raise NotAvailableError("no online feature store is configured for id-based scoring")
        ids = [pid for pid, _ in requests]
        lap = time.thread_time()
        feats = self.read_features(ids)
        lap = self._lap("feature_read_s", lap)
        out: list[dict[str, Any] | Exception] = []
        ok: list[int] = []
        for i, (pid, f) in enumerate(zip(ids, feats, strict=True)):
            missing = [] if f is None else [c for c in (self.model.input_columns or []) if f.values.get(c) is None]
            if f is None or len(missing) == len(self.model.input_columns or [None]):
                out.append(UnknownPatient(f"patient {pid!r} has no online features; write and materialize "
                                          "its features first (`facesurv features materialize`)"))
            elif missing:
                out.append(DataError(f"online features of patient {pid!r} lack {', '.join(missing)}; "
                                     "materialize the feature service again"))
            else:
                out.append({})
                ok.append(i)
        if ok:
            results = self._predict([feats[i].values for i in ok])  # type: ignore[union-attr]
            lap = self._lap("predict_s", lap)
            for i, result in zip(ok, results, strict=True):
                pid, who = requests[i]
                out[i] = self._record(patient_id=pid, request_sha=request_hash({"patient_id": pid}),
                                      requested_by=who, inputs=self._online_inputs(feats[i]),  # type: ignore[arg-type]
                                      result=result)
            self._lap("records_s", lap)
        return out

    def score_patient(self, patient_id: str, *, requested_by: str) -> dict[str, Any]:
        """One patient's lineage record; raises UnknownPatient or DataError."""
        res = self.score_patients([(patient_id, requested_by)])[0]
        if isinstance(res, Exception):
            raise res
        return res

    def score_photo(self, image: bytes, clinical: Mapping[str, Any], *, patient_id: str,
                    requested_by: str) -> dict[str, Any]:
        """A lineage record for a new photo + clinical fields. PhotoRejected: no usable face."""
        if self.embed_photo is None:
            raise NotAvailableError("photo scoring is not available on this server (no generator/aligner loaded)")
        photo_sha = hashlib.sha256(image).hexdigest()
        embedded = self.embed_photo(image)
        values = {**clinical, "latent": embedded.latent}
        wanted = self.model.input_columns
        if wanted is not None:
            missing = [c for c in wanted if c not in values]
            if missing:
                raise DataError(f"missing clinical field(s) {', '.join(missing)} (the champion model needs them)")
            values = {c: values[c] for c in wanted}
        result = self._predict([values])[0]
        lin = embedded.lineage
        inputs = {
            "kind": "photo_upload",
            "clinical": dict(clinical),
            "photo": {"sha256": photo_sha, "bytes": len(image), "dvc": None},
            "alignment": {"aligner_version": lin.get("aligner_version"),
                          "landmark_model_sha256": lin.get("landmark_model_sha256")},
            "generator": _generator_lineage(lin),
            "projection": {**self.projection_settings, **lin.get("projection", {})},
        }
        req = request_hash({"patient_id": patient_id, "clinical": dict(clinical), "photo_sha256": photo_sha})
        return self._record(patient_id=patient_id, request_sha=req, requested_by=requested_by,
                            inputs=inputs, result=result)
