"""The demo report's pictures: photo/reconstruction pairs, the astronaut's alignment and the
training figures (KM by tertile, subgroup C-index, calibration) copied next to the report.
The health and age edit grids are the attributes stage's (demo.attributes).

Every picture is drawn from what the pipeline stored (the Feast training set, the champion
model, the generator params select); the ground truth is used for nothing here.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ground.config import Params
from ground.workspace import Workspace

PAIRS = 8
UPSCALE = 4                              # the demo's portraits are tiny; enlarge for the page


def _save(img: np.ndarray, path: Path, *, upscale: int = UPSCALE) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(img)
    if upscale > 1:
        im = im.resize((im.width * upscale, im.height * upscale), Image.Resampling.NEAREST)
    im.save(path)


def _latents(frame: Any) -> np.ndarray:
    return np.stack([np.asarray(v, dtype=np.float32) for v in frame["latent"]])


def make_figures(ws: Workspace, params: Params, frame: Any, cohort_dir: Path, report_dir: Path) -> dict[str, str]:
    """Write the pictures of the training set `frame` (its recovered latents) under
    report_dir/figures; returns caption -> path relative to report_dir."""
    import pandas as pd
    import torch
    from PIL import Image

    from embedding.editing import render, tile, to_uint8
    from facesurv.components import components

    figs: dict[str, str] = {}
    fig_dir = report_dir / "figures"
    G, info = components(ws, params).generator()
    space = params.projection.space if params.projection.space != "w+" else "w"
    lat = _latents(frame)
    clinical = pd.read_csv(cohort_dir / "clinical.csv", usecols=["patient_id", "photo_id"])
    photo_of = dict(zip(clinical["patient_id"], clinical["photo_id"], strict=True))
    stand_in = " (random-init stand-in generator)" if info.is_random_init else ""

    # photo / reconstruction pairs: the cohort's portrait above, G(recovered latent) below
    pick = list(range(min(PAIRS, len(frame))))
    recon = to_uint8(render(G, torch.from_numpy(lat[pick]), space=space))
    res = G.img_resolution
    photos = [np.asarray(Image.open(_photo_path(ws, cohort_dir, photo_of[frame["patient_id"].iloc[i]]))
                         .convert("RGB").resize((res, res), Image.Resampling.LANCZOS)) for i in pick]
    grid = torch.from_numpy(np.stack([np.stack(photos), recon]).astype(np.float32) / 127.5 - 1).permute(1, 0, 4, 2, 3)
    _save(tile(grid), fig_dir / "pairs.png")
    figs[f"photo (left) and reconstruction from the recovered latent (right), {len(pick)} patients{stand_in}"] = \
        "figures/pairs.png"

    # the astronaut: the one real photo, before and after alignment
    aligned = ws.artifacts_dir / "aligned" / "astronaut.png"
    if aligned.exists():
        import skimage.data

        src = Image.fromarray(skimage.data.astronaut()).resize((256, 256))
        out = Image.open(aligned).convert("RGB").resize((256, 256))
        side = Image.new("RGB", (520, 256), "white")
        side.paste(src, (0, 0))
        side.paste(out, (264, 0))
        side.save(fig_dir / "astronaut_alignment.png")
        figs["scikit-image's astronaut: photo (left) and FFHQ-aligned crop (right), dlib 68-point landmarks"] = \
            "figures/astronaut_alignment.png"

    return figs


def _photo_path(ws: Workspace, cohort_dir: Path, photo_id: str) -> Path:
    """The photo projection saw: the flow's aligned crop, else the cohort's (pre-aligned) photo."""
    aligned = ws.artifacts_dir / "aligned" / f"{photo_id}.png"
    if aligned.exists():
        return aligned
    return next(p for p in sorted((cohort_dir / "photos").glob(f"{photo_id}.*")))


def collect_training_figures(ws: Workspace, report_dir: Path) -> dict[str, str]:
    """Copy the served model's KM-by-tertile, subgroup and calibration plots next to the report."""
    src = ws.artifacts_dir / "training" / "figures"
    figs: dict[str, str] = {}
    captions = {
        ("fusion", "km_tertiles"): "Kaplan-Meier curves of the test patients by predicted-risk tertile (fusion model)",
        ("fusion", "cindex_by_cancer_type"): "C-index per cancer type on the test patients (fusion model; the "
                                              "paper's Fig. 3 layout)",
        ("fusion", "calibration"): "calibration of the fusion model's survival probability",
        ("coxnet_latent", "km_tertiles"): "Kaplan-Meier by predicted-risk tertile, embeddings Coxnet",
    }
    for (model, kind), caption in captions.items():
        found = [p for p in (src / f"{model}_{kind}.png", src / model / f"{model}_{kind}.png") if p.exists()]
        if found and kind == "cindex_by_cancer_type" and _groups_in(found[0].with_suffix(".csv")) < 2:
            continue  # one cancer type is no subgroup analysis: leave the plot out rather than mislabel it
        if found:
            (report_dir / "figures").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(found[0], report_dir / "figures" / found[0].name)
            figs[caption] = f"figures/{found[0].name}"
    return figs


def _groups_in(csv: Path) -> int:
    import pandas as pd

    return len(pd.read_csv(csv)) if csv.exists() else 0
