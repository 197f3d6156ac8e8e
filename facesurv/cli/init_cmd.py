"""`facesurv init DIR` and `facesurv params`: workspaces and their settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facesurv.cli.common import WorkspaceOpt, open_workspace, out


def init(directory: Annotated[Path, typer.Argument(help="Workspace directory to create.")]) -> None:
    """Create a workspace: a directory with its own params.yaml (copied from the repository)."""
    from ground.workspace import Workspace

    ws = Workspace.create(directory)
    ws.load_params()  # a workspace whose params do not validate is not a workspace
    out.print(f"workspace ready at {ws.root} (edit {ws.params_path.name} to tune it)")


def params(workspace: WorkspaceOpt = None) -> None:
    """Validate the workspace's params.yaml and print it with its hash."""
    import json

    _, p = open_workspace(workspace)
    out.print_json(json.dumps({"params_hash": p.params_hash, **p.to_dict()}))


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("params")(params)
