"""`facesurv serve`: the risk-score API (and `facesurv serve token NAME` to add an API token)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from facesurv.cli.common import WorkspaceOpt, console, open_workspace, out
from ground.errors import ConfigError

serve_app = typer.Typer(help="Serve risk scores over HTTP (every score goes to the lineage ledger first).",
                        invoke_without_command=True)


def plain_http_warning(host: str) -> str | None:
    """A warning when the API would listen beyond this machine: it speaks plain HTTP, so bearer
    tokens and clinical data cross the network in the clear unless TLS is put in front."""
    import ipaddress

    name = host.strip("[]")
    if name == "localhost":
        return None
    try:
        if ipaddress.ip_address(name).is_loopback:
            return None
    except ValueError:
        pass
    return (f"binding {host}: the API speaks plain HTTP, so tokens and clinical data cross the network "
            "unencrypted; put a TLS proxy in front (docs/security.md) or bind 127.0.0.1")


@serve_app.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Interface to bind (default: serving.host).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default: serving.port).")] = None,
    no_photo: Annotated[bool, typer.Option("--no-photo", help="Skip loading the aligner and generator "
                                           "(POST /v1/scores/photo then answers 503).")] = False,
    access_log: Annotated[bool, typer.Option("--access-log", help="Log every request line.")] = False,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", help="PEM certificate: serve HTTPS yourself "
                                                  "(or put a TLS proxy in front, docs/security.md).")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key of --tls-cert.")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Start the API: POST /v1/scores, POST /v1/scores/photo, GET /v1/scores/{id}, /healthz, /readyz, /ui/."""
    if ctx.invoked_subcommand is not None:
        return
    import logging

    import uvicorn

    from facesurv.components import build_server
    from ground.config import with_overrides

    ws, params = open_workspace(workspace)
    params = with_overrides(params, serving={"host": host, "port": port})
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("give --tls-cert and --tls-key together")
    for pem in (tls_cert, tls_key):
        if pem is not None and not pem.is_file():
            raise ConfigError(f"{pem}: no such file (--tls-cert and --tls-key take PEM files)")
    plain = None if tls_cert else plain_http_warning(params.serving.host)
    if plain:
        console.print(f"warning: {plain}", markup=False)
    console.print(f"loading the champion and the stores of {ws.root} ...", markup=False)
    server = build_server(ws, params, photo_scoring=False if no_photo else None)
    base = f"{'https' if tls_cert else 'http'}://{params.serving.host}:{params.serving.port}"
    console.print(f"model: {server.model}\nledger: {server.ledger_location}", markup=False)
    for note in server.notes:
        console.print(f"note: {note}", markup=False)
    if server.generated_token:
        console.print("no API token configured: generated one for this run (local profile only):\n"
                      f"  export FACESURV_TOKEN={server.generated_token}", markup=False)
    from serving.examples import curl_examples

    console.print(f"serving on {base}; call it with:\n{curl_examples(base)}", markup=False)
    # http and loop "auto" pick httptools and uvloop, both locked: several times cheaper per request
    # than h11 and asyncio's own loop
    run = functools.partial(uvicorn.run, server.app, host=params.serving.host, port=params.serving.port,
                            log_level="info", access_log=access_log,
                            ssl_certfile=str(tls_cert) if tls_cert else None,
                            ssl_keyfile=str(tls_key) if tls_key else None)
    profile = os.environ.get(PROFILE_ENV)
    if profile:
        console.print(f"profiling the event loop thread into {profile} (written at shutdown)", markup=False)
        profiled(run, Path(profile))
    else:
        run()


PROFILE_ENV = "FACESURV_PROFILE"


def profiled(fn: Callable[[], object], out: Path) -> None:
    """Run fn under cProfile with the thread's CPU clock (time spent waiting for the GIL or the
    network is not counted) and write the stats to `out` when it returns. For `facesurv serve`
    that is the event loop thread: HTTP, routing, validation, JSON; the stage threads' CPU is in
    GET /v1/status with serving.stage_timers."""
    import cProfile
    import time

    prof = cProfile.Profile(time.thread_time)
    prof.enable()
    try:
        fn()
    finally:
        prof.disable()
        out.parent.mkdir(parents=True, exist_ok=True)
        prof.dump_stats(str(out))


@serve_app.command("token")
def token(
    name: Annotated[str, typer.Argument(help="A name for the client (shown in logs and in the ledger).")],
    scope: Annotated[list[str] | None, typer.Option(
        "--scope", help="What the token may do: score (POST scores, read back its own) and/or read "
                        "(GET any score, /v1/status). Repeat for both. Default: score.")] = None,
    revoke: Annotated[bool, typer.Option("--revoke", help="Revoke the token NAME instead of creating one "
                                         "(restart the server to apply).")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Create an API token (its sha256 goes to <workspace>/serving/tokens.json; the token is printed
    once), or revoke one with --revoke."""
    from serving.auth import add_token_to_file, revoke_token_in_file
    from serving.wiring import tokens_path

    ws, _ = open_workspace(workspace)
    path = tokens_path(ws)
    if revoke:
        if scope:
            raise ConfigError("--scope and --revoke do not go together")
        entry = revoke_token_in_file(path, name)
        console.print(f"revoked token {name!r} at {entry['revoked_at']} in {path}; a running server keeps "
                      "accepting it until it restarts", markup=False)
        return
    secret = add_token_to_file(path, name, scopes=scope or ("score",))
    console.print(f"added token {name!r} with scope {', '.join(scope or ['score'])} to {path} "
                  "(only its hash is stored; this is the only time it is shown)", markup=False)
    out.print(secret, markup=False)


@serve_app.command("tokens")
def tokens(workspace: WorkspaceOpt = None) -> None:
    """List the API tokens: name, scopes, created and revoked times (never the tokens)."""
    from serving.auth import SCOPES, read_token_entries
    from serving.wiring import tokens_path

    ws, _ = open_workspace(workspace)
    for e in read_token_entries(tokens_path(ws)):
        scopes = e.get("scopes") or SCOPES  # made before scopes: every scope
        state = f"revoked {e['revoked_at']}" if e.get("revoked_at") else "active"
        out.print(f"{e['name']}  {','.join(scopes)}  created {e.get('created_at', 'unknown')}  {state}",
                  markup=False)


def register(app: typer.Typer) -> None:
    app.add_typer(serve_app, name="serve")
