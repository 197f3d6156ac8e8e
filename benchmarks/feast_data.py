"""Shared set-up of the feature-store benchmarks: a synthetic gbsg2-shaped cohort and its latents."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from machine import machine  # noqa: F401  (re-exported to the feast_* scripts)

REPO = Path(__file__).resolve().parent.parent



def params(profile: str = "local", *, pg_database: str | None = None):
    """Repository params for a benchmark store; scale: a throwaway project (in `pg_database` if given)."""
    from ground.config import load_params, with_overrides

    p = with_overrides(load_params(REPO / "params.yaml"), cohort={"base": "gbsg2"})
    if profile == "scale":
        scale = p.features.scale if pg_database is None else dataclasses.replace(
            p.features.scale, postgres_db=pg_database)
        p = dataclasses.replace(p, features=dataclasses.replace(
            p.features, project=f"facesurv_bench_{uuid.uuid4().hex[:8]}", scale=scale))
    return dataclasses.replace(p, profile=profile)


def cohort(n: int, *, seed: int = 0) -> pd.DataFrame:
    """n patients in the gbsg2 clinical schema, values drawn at random (shapes, not statistics)."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2012-01-01T08:00:00Z")
    photo = start + pd.to_timedelta(rng.integers(0, 1460 * 24 * 3600, n), unit="s")
    known = photo + pd.to_timedelta(rng.integers(0, 15, n), unit="D")
    width = len(str(n))
    return pd.DataFrame({
        "patient_id": [f"bench-{i:0{width}d}" for i in range(n)],
        "photo_id": [f"ph-bench-{i:0{width}d}" for i in range(n)],
        "photo_taken_at": photo.map(lambda t: t.isoformat()),
        "record_known_at": known.map(lambda t: t.isoformat()),
        "age": rng.uniform(25, 80, n).round(1), "sex": "female", "cancer_type": "breast",
        "estrec": rng.integers(0, 500, n).astype(float), "pnodes": rng.integers(1, 30, n).astype(float),
        "progrec": rng.integers(0, 500, n).astype(float), "tsize": rng.integers(3, 100, n).astype(float),
        "hor_th": rng.choice(["yes", "no"], n), "menostat": rng.choice(["Pre", "Post"], n),
        "tgrade": rng.choice(["I", "II", "III"], n),
        "time_days": rng.uniform(10, 2500, n).round(), "event": rng.integers(0, 2, n),
    })


def latents(clin: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = len(clin)
    return pd.DataFrame({
        "photo_id": clin["photo_id"], "latent": list(rng.standard_normal((n, 512)).astype(np.float32)),
        "space": "w", "steps": 100, "perceptual_loss": np.float32(0.3), "mse": np.float32(0.05),
        "generator_sha256": "0" * 64, "generator_is_random_init": True, "generator_version": None,
        "perceptual_network": "stlpips", "perceptual_is_stand_in": True,
        "photo_sha256": [hashlib.sha256(p.encode()).hexdigest() for p in clin["photo_id"]],
    })


def fill(repo: Path, p, clin: pd.DataFrame, *, chunk: int = 20_000) -> None:
    """Write the cohort's clinical rows and latents, `chunk` patients per write.

    Chunks bound the memory of a large cohort (135k latents as PostgreSQL array literals would be
    about 1 GB of text at once) and leave several parquet parts, as nightly writes do.
    """
    import features.store as fs

    for i, start in enumerate(range(0, len(clin), chunk)):
        part = clin.iloc[start:start + chunk]
        rows, _ = fs.join_latents(latents(part, seed=i), part, aligner_version="bench")
        fs.write_clinical(repo, part, p)
        fs.write_latents(repo, rows, p)
