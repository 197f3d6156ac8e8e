"""Helpers shared by the flows tests: git identity, tiny params, inbox deliveries."""

from __future__ import annotations

from pathlib import Path

import numpy as np

GIT_ENV = {
    "GIT_AUTHOR_NAME": "facesurv test", "GIT_AUTHOR_EMAIL": "test@facesurv.invalid",
    "GIT_COMMITTER_NAME": "facesurv test", "GIT_COMMITTER_EMAIL": "test@facesurv.invalid",
}


def write_png(path: Path, seed: int, size: int = 32) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


TINY = {"projection": {"steps": 2, "batch_size": 2}, "align": {"workers": 1}}


def tiny_params(ws_root: Path, **sections: dict) -> None:
    """Shrink the workspace's params.yaml for tests (2 projection steps, batches of 2)."""
    import yaml

    path = ws_root / "params.yaml"
    raw = yaml.safe_load(path.read_text())
    for section, values in {**TINY, **sections}.items():
        raw[section].update(values)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def fill_inbox(ws_root: Path, *, start: int, count: int, real_face: Path | None = None, seed: int = 0) -> list[str]:
    """Drop `count` patients (rows start..start+count of gbsg2) into the inbox: clinical rows,
    pre-aligned portraits, and optionally one real photo to align. Returns their photo_ids."""
    import shutil

    from features.cohort import import_cohort

    df = import_cohort("gbsg2", seed=seed, admission_start="2012-01-01", admission_span_days=1460,
                       record_lag_days=14).iloc[start:start + count]
    inbox = ws_root / "inbox"
    (inbox / "clinical").mkdir(parents=True, exist_ok=True)
    df.to_csv(inbox / "clinical" / f"batch-{start:04d}.csv", index=False)
    ids = [str(x) for x in df["photo_id"]]
    for i, pid in enumerate(ids):
        if real_face is not None and i == 0:
            (inbox / "photos").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(real_face, inbox / "photos" / f"{pid}{real_face.suffix}")
        else:
            write_png(inbox / "prealigned" / f"{pid}.png", seed=start + i + 1000 * seed)
    return ids
