"""Feast objects of the prognosis feature repo: entity, two feature views, one FeatureService.

Only the data sources differ between profiles (parquet directories for `local`,
PostgreSQL tables for `scale`); names, types and the service are the same.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from features.feature_repo.schema import (
    CLINICAL_TS,
    CLINICAL_VIEW,
    CREATED_TS,
    ENTITY,
    JOIN_KEY,
    LATENT_FEATURES,
    LATENT_TS,
    LATENT_VIEW,
    clinical_features,
)

SERVICE_VERSION = "v1"


def feast_type(kind: str) -> Any:
    from feast.types import Array, Bool, Float32, Float64, Int64, String

    return {"float32_list": Array(Float32), "string": String, "int64": Int64, "float32": Float32,
            "float64": Float64, "bool": Bool}[kind]


def _source(view: str, timestamp_field: str, *, profile: str, location: str) -> Any:
    if profile == "local":
        from feast import FileSource
        from feast.data_format import ParquetFormat

        return FileSource(name=f"{view}_source", path=location, file_format=ParquetFormat(),
                          timestamp_field=timestamp_field, created_timestamp_column=CREATED_TS)
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
        PostgreSQLSource,
    )

    return PostgreSQLSource(name=f"{view}_source", table=location, timestamp_field=timestamp_field,
                            created_timestamp_column=CREATED_TS)


def feature_objects(*, base: str, profile: str, locations: dict[str, str], ttl_days: int,
                    service_name: str) -> list[Any]:
    """[entity, face_latent, clinical, service] for `feast apply`.

    locations: {"face_latent": ..., "clinical": ...}: parquet directories (local) or table
    names (scale).
    """
    from feast import Entity, FeatureService, FeatureView, Field
    from feast.value_type import ValueType

    patient = Entity(name=ENTITY, join_keys=[JOIN_KEY], value_type=ValueType.STRING,
                     description="A patient of the cohort; survival labels are not features.")
    ttl = timedelta(days=ttl_days)
    face_latent = FeatureView(
        name=LATENT_VIEW, entities=[patient], ttl=ttl, online=True,
        schema=[Field(name=n, dtype=feast_type(k)) for n, k in LATENT_FEATURES],
        source=_source(LATENT_VIEW, LATENT_TS, profile=profile, location=locations[LATENT_VIEW]),
        description="StyleGAN2 latent of the admission photo (event time = photo_taken_at) and its provenance.",
        tags={"event_timestamp": LATENT_TS},
    )
    clinical = FeatureView(
        name=CLINICAL_VIEW, entities=[patient], ttl=ttl, online=True,
        schema=[Field(name=n, dtype=feast_type(k)) for n, k in clinical_features(base)],
        source=_source(CLINICAL_VIEW, CLINICAL_TS, profile=profile, location=locations[CLINICAL_VIEW]),
        description=f"Clinical covariates of base dataset {base} (event time = record_known_at).",
        tags={"event_timestamp": CLINICAL_TS, "base": base},
    )
    service = FeatureService(
        name=service_name, features=[face_latent, clinical],
        description="Latent + clinical covariates for the prognosis models.",
        tags={"version": SERVICE_VERSION, "base": base},
    )
    return [patient, face_latent, clinical, service]
