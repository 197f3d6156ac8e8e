"""Options and helpers every command shares. Imports here must stay cheap (`--help` speed)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

WorkspaceOpt = Annotated[
    Path | None,
    typer.Option("--workspace", "-w", help="Workspace directory (holds params.yaml and the stores). "
                 "Default: $FACESURV_WORKSPACE or the current directory."),
]

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def open_workspace(path: Path | None):  # -> tuple[Workspace, Params]
    from ground.workspace import Workspace

    ws = Workspace.resolve(path)
    return ws, ws.load_params()

