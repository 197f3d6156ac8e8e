"""`facesurv serve`: the risk-score API (and `facesurv serve token NAME` to add an API token)."""

from __future__ import annotations

from typing import Annotated

import typer

from facesurv.cli.common import WorkspaceOpt, console, open_workspace, out

serve_app = typer.Typer(help="Serve risk scores over HTTP (every score goes to the lineage ledger first).",
                        invoke_without_command=True)


@serve_app.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Interface to bind (default: serving.host).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default: serving.port).")] = None,
    no_photo: Annotated[bool, typer.Option("--no-photo", help="Skip loading the aligner and generator "
                                           "(POST /v1/scores/photo then answers 503).")] = False,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request line.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Start the API: POST /v1/scores, POST /v1/scores/photo, GET /v1/scores/{id}, /healthz, /readyz, /ui/."""
    if ctx.invoked_subcommand is not None:
        return
    import logging

    import uvicorn

    from facesurv.config import with_overrides
    from serving.wiring import build_server

    ws, params = open_workspace(workspace)
    params = with_overrides(params, serving={"host": host, "port": port})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console.print(f"loading the champion and the stores of {ws.root} ...", markup=False)
    server = build_server(ws, params, photo_scoring=False if no_photo else None)
    base = f"http://{params.serving.host}:{params.serving.port}"
    console.print(f"model: {server.model}\nledger: {server.ledger_location}", markup=False)
    for note in server.notes:
        console.print(f"note: {note}", markup=False)
    if server.generated_token:
        console.print("no API token configured: generated one for this run (local profile only):\n"
                      f"  export FACESURV_TOKEN={server.generated_token}", markup=False)
    from serving.examples import curl_examples

    console.print(f"serving on {base}; call it with:\n{curl_examples(base)}", markup=False)
    uvicorn.run(server.app, host=params.serving.host, port=params.serving.port, log_level="info",
                access_log=access_log)


@serve_app.command("token")
def token(
    name: Annotated[str, typer.Argument(help="A name for the client (shown in logs and in the ledger).")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Create an API token: its sha256 goes to <workspace>/serving/tokens.json; the token is printed once."""
    from serving.auth import add_token_to_file
    from serving.wiring import tokens_path

    ws, _ = open_workspace(workspace)
    path = tokens_path(ws)
    secret = add_token_to_file(path, name)
    console.print(f"added token {name!r} to {path} (only its hash is stored; this is the only time it is shown)",
                  markup=False)
    out.print(secret, markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(serve_app, name="serve")
