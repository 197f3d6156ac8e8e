"""OpenLineage datasets of the flows: plain dicts in the run records, client datasets in events.

The flows describe what a run read and wrote as plain dicts (RunRecord.input_datasets and
output_datasets, so the platform's record lists them as well); flows.openlineage_events turns
them into OpenLineage datasets with these facets:

    kind          namespace:name                 facets
    dvc           file:<data>/<out>              version (DVC md5), facesurv_dvc (out, rev, md5)
    feature_view  feast://<project>:<view>       schema, facesurv_feast (project, view, service,
                                                 views), facesurv_generator (face_latent)
    mlflow_model  mlflow:<registered name>       version, facesurv_mlflow_model (name, version, run, alias)
    generator     mlflow:<registered name>       version, facesurv_generator, facesurv_mlflow_model

The custom facets' JSON schemas are in tests/flows/data/openlineage/facesurv/.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

FACET_SCHEMAS = "https://facesurv.invalid/spec/facets/1-0-0"  # copies: tests/flows/data/openlineage/facesurv/
MLFLOW_NAMESPACE = "mlflow"


def producer() -> str:
    """The events' producer URI: this code base and its version."""
    try:
        version = metadata.version("facesurv")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"urn:facesurv:flows:{version}"


# ---- datasets, as plain dicts (what the flows put in their run records) ----------------------

def dvc_datasets(data_dir: Path | str, *, rev: str | None, md5: Mapping[str, str],
                 outs: Sequence[str] = ("photos", "prealigned", "clinical")) -> list[dict[str, Any]]:
    """The DVC-tracked outs of the data repository that `md5` names (photos, clinical data)."""
    return [{"kind": "dvc", "path": str(Path(data_dir) / out), "out": out, "rev": rev, "md5": md5[out]}
            for out in outs if md5.get(out)]


def feature_view_datasets(*, project: str, service: str, views: Mapping[str, Sequence[tuple[str, str]]],
                          generator: Mapping[str, Any] | None = None, latent_view: str = "face_latent",
                          rows: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """One dataset per Feast feature view; `generator` (version, sha256, is_random_init) is what the
    latent view's new rows were projected with."""
    out = []
    for view, fields in views.items():
        desc: dict[str, Any] = {"kind": "feature_view", "project": project, "view": view, "service": service,
                                "views": sorted(views), "fields": [[n, k] for n, k in fields]}
        if view == latent_view and generator:
            desc["generator"] = dict(generator)
        if rows is not None and view in rows:
            desc["rows"] = int(rows[view])
        out.append(desc)
    return out


def model_datasets(versions: Mapping[str, str], *, run_ids: Mapping[str, str] | None = None,
                   champion: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Registered MLflow model versions (name -> version); `champion` a promotion decision."""
    promoted = champion or {}
    out = []
    for name, version in sorted(versions.items()):
        alias = "champion" if promoted.get("promoted") and str(promoted.get("version")) == str(version) \
            and promoted.get("model_name", name) == name else "challenger"
        out.append({"kind": "mlflow_model", "name": name, "version": str(version),
                    "run_id": (run_ids or {}).get(name), "alias": alias})
    return out


def generator_dataset(*, name: str, version: str | None, sha256: str | None, run_id: str | None,
                      is_random_init: bool = False) -> dict[str, Any]:
    return {"kind": "generator", "name": name, "version": None if version is None else str(version),
            "sha256": sha256, "run_id": run_id, "is_random_init": is_random_init}


# ---- facets (pure: plain values in, client objects out) ---------------------------------------

@functools.cache
def custom_facets() -> dict[str, type]:
    """The facesurv facets as client facet classes (built once, on first use)."""
    import attr
    from openlineage.client.facet_v2 import DatasetFacet, RunFacet

    def schema(name: str) -> Any:
        return staticmethod(lambda: f"{FACET_SCHEMAS}/{name}.json#/$defs/{name}")

    @attr.define
    class DvcDatasetFacet(DatasetFacet):
        out: str
        rev: str | None = attr.field(default=None)
        md5: str | None = attr.field(default=None)
        _get_schema = schema("DvcDatasetFacet")

    @attr.define
    class FeastDatasetFacet(DatasetFacet):
        project: str
        featureView: str  # noqa: N815 (OpenLineage facets are camelCase)
        featureService: str  # noqa: N815
        featureViews: list[str] = attr.field(factory=list)  # noqa: N815
        rowsWritten: int | None = attr.field(default=None)  # noqa: N815
        _get_schema = schema("FeastDatasetFacet")

    @attr.define
    class GeneratorDatasetFacet(DatasetFacet):
        version: str | None = attr.field(default=None)
        sha256: str | None = attr.field(default=None)
        isRandomInit: bool | None = attr.field(default=None)  # noqa: N815
        _get_schema = schema("GeneratorDatasetFacet")

    @attr.define
    class MlflowModelDatasetFacet(DatasetFacet):
        name: str
        version: str | None = attr.field(default=None)
        runId: str | None = attr.field(default=None)  # noqa: N815
        alias: str | None = attr.field(default=None)
        _get_schema = schema("MlflowModelDatasetFacet")

    @attr.define
    class FacesurvRunFacet(RunFacet):
        flowRunId: str  # noqa: N815
        status: str
        paramsHash: str | None = attr.field(default=None)  # noqa: N815
        codeVersion: str | None = attr.field(default=None)  # noqa: N815
        dataRev: str | None = attr.field(default=None)  # noqa: N815
        record: str | None = attr.field(default=None)
        _get_schema = schema("FacesurvRunFacet")

    return {c.__name__: c for c in (DvcDatasetFacet, FeastDatasetFacet, GeneratorDatasetFacet,
                                    MlflowModelDatasetFacet, FacesurvRunFacet)}


def _dataset_parts(desc: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(namespace, name, facets) of a dataset dict."""
    from openlineage.client.facet_v2 import dataset_version_dataset, schema_dataset

    f, p = custom_facets(), producer()
    kind = desc.get("kind")
    facets: dict[str, Any] = {}
    if kind == "dvc":
        if desc.get("md5") or desc.get("rev"):
            facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=str(desc.get("md5") or desc.get("rev")), producer=p)
        facets["facesurv_dvc"] = f["DvcDatasetFacet"](out=desc["out"], rev=desc.get("rev"), md5=desc.get("md5"),
                                                      producer=p)
        return "file", str(desc["path"]), facets
    if kind == "feature_view":
        facets["schema"] = schema_dataset.SchemaDatasetFacet(
            fields=[schema_dataset.SchemaDatasetFacetFields(name=n, type=k) for n, k in desc["fields"]], producer=p)
        facets["facesurv_feast"] = f["FeastDatasetFacet"](
            project=desc["project"], featureView=desc["view"], featureService=desc["service"],
            featureViews=list(desc.get("views") or []), rowsWritten=desc.get("rows"), producer=p)
        gen = desc.get("generator")
        if gen:
            facets["facesurv_generator"] = f["GeneratorDatasetFacet"](
                version=gen.get("version"), sha256=gen.get("sha256"), isRandomInit=gen.get("is_random_init"),
                producer=p)
        return f"feast://{desc['project']}", desc["view"], facets
    if kind in ("mlflow_model", "generator"):
        if desc.get("version") is not None:
            facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=str(desc["version"]), producer=p)
        facets["facesurv_mlflow_model"] = f["MlflowModelDatasetFacet"](
            name=desc["name"], version=desc.get("version"), runId=desc.get("run_id"), alias=desc.get("alias"),
            producer=p)
        if kind == "generator":
            facets["facesurv_generator"] = f["GeneratorDatasetFacet"](
                version=desc.get("version"), sha256=desc.get("sha256"), isRandomInit=desc.get("is_random_init"),
                producer=p)
        return MLFLOW_NAMESPACE, desc["name"], facets
    raise ValueError(f"unknown dataset kind {kind!r} (known: dvc, feature_view, mlflow_model, generator)")


def input_dataset(desc: Mapping[str, Any]) -> Any:
    from openlineage.client.event_v2 import InputDataset

    namespace, name, facets = _dataset_parts(desc)
    return InputDataset(namespace=namespace, name=name, facets=facets)


def output_dataset(desc: Mapping[str, Any]) -> Any:
    from openlineage.client.event_v2 import OutputDataset

    namespace, name, facets = _dataset_parts(desc)
    return OutputDataset(namespace=namespace, name=name, facets=facets)
