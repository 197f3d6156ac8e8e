"""Turn the latent table (features.latents: `facesurv project`'s latents.parquet, or a projection
shard read as that table) into face_latent rows (patient, photo time, aligner)."""

from __future__ import annotations

import pandas as pd

from features.feature_repo.schema import JOIN_KEY, LATENT_TS
from ground.errors import DataError


def join_latents(latents: pd.DataFrame, clinical: pd.DataFrame, *, manifest: pd.DataFrame | None = None,
                 aligner_version: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Attach patient_id, photo_taken_at (from clinical.csv) and aligner_version to latents.

    Args:
        latents: rows of the latent table (photo_id, latent, ... photo_sha256).
        clinical: clinical table with photo_id, patient_id, photo_taken_at.
        manifest: the alignment manifest (photo_id, status, aligner_version); wins over
            `aligner_version` for the photos it lists.
        aligner_version: used for photos declared pre-aligned (or absent from the manifest).

    Returns:
        (rows ready for write_latents, unmatched) where unmatched holds photo_id and reason
        for latents that cannot be attributed to a patient or an aligner.
    """
    for name, df, cols in (("latents", latents, ("photo_id",)),
                           ("clinical", clinical, ("photo_id", JOIN_KEY, LATENT_TS))):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise DataError(f"{name} table lacks column(s) {', '.join(missing)}")
    if manifest is None and aligner_version is None:
        raise DataError("latents need an aligner version: pass the alignment manifest, or the aligner "
                        "version the photos were pre-aligned with (--aligner-version)")
    keep = [c for c in latents.columns if c not in (JOIN_KEY, LATENT_TS, "aligner_version")]
    out = latents[keep].merge(clinical[["photo_id", JOIN_KEY, LATENT_TS]].drop_duplicates("photo_id"),
                              on="photo_id", how="left")
    out["aligner_version"] = aligner_version
    if manifest is not None:
        if "aligner_version" not in manifest.columns:
            raise DataError("manifest lacks column aligner_version; pass --aligner-version instead")
        m = manifest
        if "status" in m.columns:
            m = m[m["status"].astype(str) == "aligned"]
        versions = m.drop_duplicates("photo_id", keep="last").set_index("photo_id")["aligner_version"]
        from_manifest = out["photo_id"].map(versions)
        out["aligner_version"] = from_manifest.where(from_manifest.notna(), out["aligner_version"])
    reasons = pd.Series("", index=out.index)
    reasons[out[JOIN_KEY].isna()] = "photo_id not in clinical table"
    reasons[(reasons == "") & out["aligner_version"].isna()] = "photo not aligned in the manifest"
    bad = reasons != ""
    unmatched = pd.DataFrame({"photo_id": out.loc[bad, "photo_id"].to_numpy(), "reason": reasons[bad].to_numpy()})
    return out[~bad].reset_index(drop=True), unmatched
