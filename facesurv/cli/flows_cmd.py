"""`facesurv flows run|serve`: the Prefect flows, now or on their schedules."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from facesurv.cli.common import WorkspaceOpt, console, open_workspace, out

FLOW_NAMES = ("nightly-embedding", "train-and-promote", "generator-training")

flows_app = typer.Typer(help="Run the pipeline's Prefect flows now, or serve them on their cron schedules.",
                        no_args_is_help=True)


@flows_app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="nightly-embedding | train-and-promote | generator-training")],
    dask_workers: Annotated[int | None, typer.Option(
        help="Project on a local Dask cluster of this many workers (default: flows.dask_scheduler, else in-process).")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Run one flow now, against this workspace (Prefect's ephemeral API unless one is configured)."""
    from flows import runtime
    from ground.errors import ConfigError

    if name not in FLOW_NAMES:
        raise ConfigError(f"unknown flow {name!r}; choose one of: {', '.join(FLOW_NAMES)}")
    if dask_workers is not None and dask_workers < 1:
        raise ConfigError("--dask-workers must be >= 1")
    ws, params = open_workspace(workspace)
    runtime.configure(ws.prefect_home, params)
    console.print(f"running {name} on {ws.root} (the first run starts Prefect's local API: about 20 s)")
    if name == "nightly-embedding":
        from flows.nightly_embedding import nightly_embedding

        summary = nightly_embedding(str(ws.root), dask_workers=dask_workers)
    elif name == "generator-training":
        from flows.generator_training import generator_training

        summary = generator_training(str(ws.root))
    else:
        from flows.train_and_promote import train_and_promote

        summary = train_and_promote(str(ws.root))
    out.print(json.dumps(summary, indent=1, default=str))


@flows_app.command("serve")
def serve(
    api_url: Annotated[str | None, typer.Option(
        help="Prefect API to register with (default: flows.prefect_api_url, else a local server started here).")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Serve nightly-embedding and train-and-promote as deployments on params.flows' cron schedules."""
    from flows.deploy import serve_all

    ws, params = open_workspace(workspace)
    serve_all(ws, params, api_url=api_url, announce=lambda msg: console.print(msg))


def register(app: typer.Typer) -> None:
    app.add_typer(flows_app, name="flows")
