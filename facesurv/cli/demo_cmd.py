"""`facesurv demo`: the main job end to end on a semi-synthetic cohort."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from facesurv.cli.common import console, out


def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Workspace to create (or reuse) for the demo.")] = Path("demo-out"),
    base: Annotated[str | None, typer.Option(help="Base dataset for the cohort (default: cohort.base).")] = None,
    patients: Annotated[int | None, typer.Option(help="Number of patients (default: demo.patients; 0 = all).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for the cohort and every stage (default: demo.seed).")] = None,
    faces: Annotated[Path | None, typer.Option(help="Labelled face folder (photos + labels.csv) for a real-face cohort (default: demo.faces).")] = None,
    rendered: Annotated[bool, typer.Option("--rendered", help="Rendered faces even where a face folder is configured.")] = False,
) -> None:
    """Run every stage of the platform that has landed, in order, and print what each found."""
    import logging
    import os
    import warnings

    from ground.atomic import ensure_writable_dir

    # The demo prints one line per stage; the libraries' own chatter goes to their loggers.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")  # mlflow sets its loggers' level from this on import
    warnings.filterwarnings("ignore")
    for name in ("mlflow", "alembic", "great_expectations", "dvc", "feast", "distributed", "py.warnings"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from demo.runner import run_demo
    from ground.errors import ConfigError

    ensure_writable_dir(out_dir)
    if faces is not None and not faces.is_dir():
        raise ConfigError(f"--faces {faces}: no such folder; pass a folder holding photos and labels.csv")
    if faces is not None and rendered:
        raise ConfigError("--faces and --rendered contradict each other; pass one of them")
    overrides: dict[str, dict[str, Any]] = {
        "cohort": {"base": base, "seed": seed},
        "demo": {"patients": patients, "seed": seed, "faces": str(faces.resolve()) if faces is not None else None},
        "synth": {"patients": patients}}
    results = run_demo(out_dir, params_overrides=overrides, log=lambda m: console.print(m, markup=False),
                       rendered=rendered)
    out.print("\nstage summary:", markup=False)
    for r in results:
        out.print(f"  {r.name:<24} {r.status:<14} {r.seconds:7.1f}s", markup=False)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
