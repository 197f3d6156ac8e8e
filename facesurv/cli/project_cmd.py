"""`facesurv project ALIGNED_DIR OUT_DIR`: one StyleGAN2 latent per aligned photo, in OUT_DIR/latents.parquet."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Annotated

import typer

from facesurv.cli.common import WorkspaceOpt, console, open_workspace, out

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
FAILURE_COLUMNS = ("photo_id", "path", "reason")


def _image_entries(folder: Path) -> list[Path]:
    """Every name with an image suffix that is not a real sub-folder. Links, FIFOs and the like are
    kept (never followed or opened here) so that projecting them fails with the reason."""
    entries = []
    for entry in os.scandir(folder):
        if Path(entry.name).suffix.lower() in IMAGE_SUFFIXES and not entry.is_dir(follow_symlinks=False):
            entries.append(folder / entry.name)
    return sorted(entries)


def _read_manifest(manifest: Path, aligned_dir: Path) -> list[dict[str, str]]:
    from embedding.fileio import UnsafeFileError, open_regular_file
    from ground.errors import DataError

    try:
        with io.TextIOWrapper(open_regular_file(manifest, root=aligned_dir), encoding="utf-8", newline="") as fh:
            return list(csv.DictReader(fh))
    except UnsafeFileError as exc:
        raise DataError(str(exc)) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{manifest}: cannot read the align manifest ({exc}); rerun `facesurv align`") from None


def list_photos(aligned_dir: Path) -> tuple[list[tuple[str, str]], int]:
    """(photo_id, path) pairs to project and how many manifest rows were quarantined.

    An `align` output (manifest.csv) gives its aligned rows; otherwise every image file in the
    folder, photo_id = file stem. Only plain files inside the folder are read later on: a link
    or special file listed here ends in failures.csv with the reason.
    """
    from ground.errors import DataError

    if not aligned_dir.is_dir():
        raise DataError(f"{aligned_dir}: no such directory (give the folder `facesurv align` wrote, "
                        "or a folder of aligned images)")
    manifest = aligned_dir / "manifest.csv"
    if os.path.lexists(manifest):
        rows = _read_manifest(manifest, aligned_dir)
        if rows and not {"photo_id", "status"} <= set(rows[0]):
            raise DataError(f"{manifest}: expected columns photo_id and status (an align manifest)")
        photos = [(r["photo_id"], str(aligned_dir / (r.get("output_file") or f"{r['photo_id']}.png")))
                  for r in rows if r["status"] == "aligned"]
        return photos, sum(r["status"] != "aligned" for r in rows)
    files = _image_entries(aligned_dir)
    stems = [p.stem for p in files]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})[:3]
        raise DataError(f"{aligned_dir}: several files share a photo_id (file stem): {', '.join(dup)}; "
                        "keep one image per photo_id")
    return [(p.stem, str(p)) for p in files], 0


def project(
    aligned_dir: Annotated[Path, typer.Argument(help="Folder of aligned photos (`facesurv align` output with "
                                                      "manifest.csv, or image files named <photo_id>.png).")],
    out_dir: Annotated[Path, typer.Argument(help="Where latents.parquet, failures.csv and shards/ go.")],
    space: Annotated[str | None, typer.Option(help="z (the paper's) | w (NVIDIA's) | w+ (default: projection.space).")] = None,
    steps: Annotated[int | None, typer.Option(help="Optimisation steps (default: projection.steps).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Photos per batch (default: projection.batch_size).")] = None,
    loss: Annotated[str | None, typer.Option(help="mse | perceptual | mse+perceptual (default: projection.loss).")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Embed every aligned photo as a StyleGAN2 latent by gradient descent (resumable: reruns skip finished batches)."""
    from embedding.project_batch import PhotoInput, project_photos
    from facesurv.components import components
    from features.latents import latent_table, stand_in_statement
    from ground.atomic import atomic_path, ensure_writable_dir
    from ground.config import with_overrides
    from ground.errors import DataError

    ws, params = open_workspace(workspace)
    params = with_overrides(params, projection={"space": space, "steps": steps, "batch_size": batch_size,
                                                "loss": loss})
    pp = params.projection
    photos, quarantined = list_photos(aligned_dir)
    if not photos:
        raise DataError(f"{aligned_dir}: no aligned photos to project"
                        f"{f' ({quarantined} quarantined by alignment)' if quarantined else ''}")
    ensure_writable_dir(out_dir)
    # the flow's models, device and run key: a photo gets the latent the nightly flow gives it
    comp = components(ws, params)
    projection = comp.projection(with_stats=False)  # drawn by the first batch, if any
    device = projection.device
    # --batch-size wins; otherwise projection.batch_size on the CPU, and on CUDA what fits its free memory
    batch = batch_size if batch_size is not None else comp.projection_batch_size()
    for line in stand_in_statement(projection.provenance).split(" | "):
        console.print(f"[yellow]warning:[/yellow] {line}" if "STAND-IN" in line or "random" in line.lower() else line,
                      highlight=False)
    start = (f"from encoder {projection.encoder_info.sha256[:12]}" if projection.encoder_info is not None
             else "from w_avg")
    console.print(f"projecting {len(photos)} photos in {pp.space} space {start}, {pp.steps} steps, loss {pp.loss}, "
                  f"batch {batch}, on {device}", highlight=False)

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task("projecting", total=len(photos))
        try:
            run = project_photos(
                projection, [PhotoInput(pid, path, root=str(aligned_dir)) for pid, path in photos],
                shard_dir=out_dir / "shards", batch_size=batch,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                warn=lambda msg: console.print(f"[yellow]warning:[/yellow] {msg}", highlight=False))
        except ValueError as exc:
            raise DataError(str(exc)) from None

    import pyarrow.parquet as pq

    with atomic_path(out_dir / "latents.parquet") as tmp:
        pq.write_table(latent_table(run.results, run.provenance), tmp)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(FAILURE_COLUMNS)
    for f in run.failures:
        writer.writerow((f.photo_id, f.path, f.reason))
    with atomic_path(out_dir / "failures.csv") as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")

    if len(run.results):
        import numpy as np

        mse = np.array([r.mse for r in run.results])
        init = np.array([r.initial_loss for r in run.results])
        fin = np.array([r.final_loss for r in run.results])
        summary = f"; {pp.loss} loss median {np.median(init):.4g} -> {np.median(fin):.4g}, pixel MSE median {np.median(mse):.4g}"
    else:
        summary = ""
    out.print(f"wrote {out_dir / 'latents.parquet'}: {len(run.results)} photos ({run.projected} projected, "
              f"{run.reused} reused from shards){summary}", highlight=False)
    if run.failures:
        for f in run.failures[:5]:
            console.print(f"  failed {f.photo_id}: {f.reason}", highlight=False)
        raise DataError(f"{len(run.failures)} of {len(photos)} photos could not be projected (listed in "
                        f"{out_dir / 'failures.csv'}); the other {len(run.results)} are in latents.parquet. "
                        "Fix or remove those files and rerun: finished photos are reused")


def register(app: typer.Typer) -> None:
    app.command("project")(project)
