"""`facesurv align IN_DIR OUT_DIR`: FFHQ-style aligned crops of every photo, with a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facesurv.cli.common import WorkspaceOpt, console, open_workspace, out


def align(
    in_dir: Annotated[Path, typer.Argument(help="Directory of photos (plain files with an image extension; links, "
                                                "hard links and special files are quarantined unread).")],
    out_dir: Annotated[Path, typer.Argument(help="Where <photo_id>.png and manifest.csv go.")],
    workers: Annotated[int | None, typer.Option(help="Processes (default: align.workers).")] = None,
    output_size: Annotated[int | None, typer.Option(help="Aligned size in pixels (default: align.output_size).")] = None,
    multi_face: Annotated[str | None, typer.Option(help="reject | best (default: align.multi_face).")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Detect, landmark and align the face in every photo (dlib + FFHQ); quarantine the rest with a reason.

    Reruns reuse every photo whose bytes, options and models are unchanged. Only plain files inside
    IN_DIR are opened: a link, hard link, FIFO or device is quarantined as unreadable, with the reason.
    """
    from ground.config import with_overrides
    from ground.errors import DataError, NotAvailableError

    _, params = open_workspace(workspace)
    # another output size keeps the configured supersampling factor (FFHQ: 4x)
    transform_size = None
    if output_size is not None and output_size >= 1:
        transform_size = max(output_size, round(params.align.transform_size * output_size / params.align.output_size))
    params = with_overrides(params, align={"workers": workers, "output_size": output_size,
                                           "transform_size": transform_size, "multi_face": multi_face})

    from embedding.align import AlignConfig, BatchInputError, ModelFileError, align_directory

    config = AlignConfig.from_object(params.align)
    if not in_dir.is_dir():
        raise DataError(f"{in_dir}: no such directory of photos (give the folder that holds the images)")
    console.print(f"aligning photos in {in_dir} with {config.workers} worker(s), output {config.output_size}px")

    def report(row: dict[str, str]) -> None:
        if row["status"] != "aligned":
            console.print(f"  quarantined {row['photo_id']}: {row['reason']} ({row['message']})", highlight=False)

    try:
        result = align_directory(in_dir, out_dir, config=config, progress=report)
    except BatchInputError as exc:
        raise DataError(str(exc)) from None
    except ModelFileError as exc:
        raise NotAvailableError(str(exc)) from None
    except OSError as exc:
        raise DataError(f"{out_dir}: cannot write the aligned photos: {exc.strerror or exc}") from None

    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items()) if k != "aligned")
    out.print(f"{result.aligned} aligned, {result.quarantined} quarantined"
              f"{' (' + counts + ')' if counts else ''}; {result.reused} reused from the previous run; "
              f"manifest {result.manifest_path}", highlight=False)
    if result.ignored:
        shown = ", ".join(result.ignored[:5]) + (" ..." if len(result.ignored) > 5 else "")
        out.print(f"ignored {len(result.ignored)} entr{'y' if len(result.ignored) == 1 else 'ies'} without an "
                  f"image extension: {shown}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("align")(align)
