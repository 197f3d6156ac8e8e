"""The one latent table, and the one rule that turns projected latents into the feature-store latent.

The face_latent feature view, the latent contract and every survival model read one 512-d
vector per photo. A projection in "z" or "w" gives that vector directly. A "w+" projection gives
one w per synthesis layer, (num_ws, w_dim) per photo; its feature latent is the mean over the
layers, which is the `w` the projection reports (embedding.projection.ProjectionResult.w) and a
point in the same space as a "w" latent, so models trained on either read it alike.

Every projection output is read as one table (`latent_table`): `facesurv project`'s
latents.parquet, and each shard of embedding.project_batch (`shard_table`: what the nightly flow
validates and writes to the feature store). Columns, one row per photo:

    photo_id, photo_sha256     the photo and its identity (seed and reuse key)
    latent                     512 float32: z or w; for w+ the layer mean (`feature_latents`)
    latent_layers              w+: every layer's w, flattened (num_ws x 512 float32); null otherwise
    w                          the w the latent maps to
    space, steps, loss         the projection settings that shape the latent
    perceptual_loss, mse, initial_loss, final_loss    (perceptual_loss is NaN without a network)
    generator_sha256, generator_is_random_init
    generator_version          the generator registry's name for the weights ("facesurv-generator v3");
                               null for a file, the stand-in, or provenance written before it was recorded
    perceptual_network, perceptual_sha256, perceptual_is_stand_in
                               "none", null and false under the pixel loss, which loads no network
    encoder_sha256             the generator's encoder that started the projection (projection.init:
                               encoder); null when every photo started at w_avg
    run_key                    the shards' key (embedding.project_batch.Projection.key)

Schema metadata: `facesurv.stand_in` (a sentence naming every stand-in in use) and
`facesurv.provenance` (JSON: generator, perceptual network, settings, run key).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ground.types import LATENT_DIM

# embedding.projection.SPACES, not imported: that module brings torch, and this one is numpy only
SPACES = ("z", "w", "w+")
LOSS_COLUMNS = ("perceptual_loss", "mse", "initial_loss", "final_loss")


def feature_latents(latents: np.ndarray, *, space: str) -> np.ndarray:
    """(N, d) float32 feature latents from a projection's latents.

    Args:
        latents: (N, d) for "z" and "w"; (N, num_ws, d) for "w+".
        space: the projection space the latents were found in.
    Raises:
        ValueError: an unknown space, or latents whose shape does not fit it.
    """
    if space not in SPACES:
        raise ValueError(f"unknown projection space {space!r}; use one of {', '.join(SPACES)}")
    arr = np.asarray(latents, dtype=np.float32)
    want = 3 if space == "w+" else 2
    if arr.ndim != want:
        shape = "(N, num_ws, d)" if space == "w+" else "(N, d)"
        raise ValueError(f"{space} latents must be {shape}; got shape {arr.shape}")
    return arr.mean(axis=1, dtype=np.float32) if space == "w+" else arr


def stand_in_statement(provenance: Mapping[str, Any]) -> str:
    """One sentence naming every stand-in a projection ran on ('|' between them)."""
    g, p = provenance["generator"], provenance["perceptual"]
    parts = [f"generator: {g['description']}"] if g["is_random_init"] else []
    if p and p["is_stand_in"]:
        parts.append(f"perceptual network: {p['description']}")
    if parts:
        return "STAND-INS IN USE. " + " | ".join(parts)
    return "no stand-ins: user-provided generator" + (" and ImageNet VGG-16 weights" if p else
                                                      ", no perceptual network (pixel loss)")


def latent_table(rows: Sequence[Any], provenance: Mapping[str, Any]) -> Any:
    """The latent table (pyarrow) of projected photos.

    rows: embedding.project_batch.ProjectedPhoto (photo_id, photo_sha256, latent, w, losses).
    provenance: a BatchRun's or a shard's (generator, perceptual, settings, run_key).
    Raises:
        ValueError: latents whose shape does not fit the space.
    """
    import pyarrow as pa

    s, g, p = provenance["settings"], provenance["generator"], provenance["perceptual"]
    n, space = len(rows), s["space"]
    raw = np.stack([r.latent for r in rows]) if n else np.zeros((0, LATENT_DIM), np.float32)
    lat = feature_latents(raw, space=space) if n else raw

    def fixed(a: np.ndarray) -> Any:
        a = np.ascontiguousarray(a, dtype=np.float32)
        return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1), pa.float32()), a.shape[1])

    def same(value: Any, kind: Any) -> Any:
        return pa.array([value] * n, kind)

    layers = [r.latent.reshape(-1) for r in rows] if space == "w+" else [None] * n
    table = pa.table({
        "photo_id": pa.array([r.photo_id for r in rows], pa.string()),
        "photo_sha256": pa.array([r.photo_sha256 for r in rows], pa.string()),
        "latent": fixed(lat),
        "latent_layers": pa.array(layers, pa.list_(pa.float32())),
        "w": fixed(np.stack([r.w for r in rows]) if n else raw),
        "space": same(space, pa.string()), "steps": same(int(s["steps"]), pa.int32()),
        "loss": same(s["loss"], pa.string()),
        **{c: pa.array([float(getattr(r, c)) for r in rows], pa.float64()) for c in LOSS_COLUMNS},
        "generator_sha256": same(g["sha256"], pa.string()),
        "generator_is_random_init": same(bool(g["is_random_init"]), pa.bool_()),
        # shards written before the registry existed have no "version": null, as for a file
        "generator_version": same(g.get("version"), pa.string()),
        "perceptual_network": same(p["network"] if p else "none", pa.string()),
        "perceptual_sha256": same(p["sha256"] if p else None, pa.string()),
        "perceptual_is_stand_in": same(bool(p and p["is_stand_in"]), pa.bool_()),
        # the encoder whose guess started the optimisation (projection.init: encoder); null from w_avg
        "encoder_sha256": same((provenance.get("encoder") or {}).get("sha256"), pa.string()),
        "run_key": same(provenance["run_key"], pa.string()),
    })
    return table.replace_schema_metadata({"facesurv.stand_in": stand_in_statement(provenance),
                                          "facesurv.provenance": json.dumps(provenance, default=str)})


def shard_table(path: str | os.PathLike) -> Any:
    """One projection shard (embedding.project_batch) as the latent table."""
    from embedding.project_batch import read_shard

    meta, rows = read_shard(path)
    return latent_table(rows, meta)
