"""The `facesurv` command, the top of the package picture.

Command groups live in sibling modules, each exposing `register(app)`. They reach the
libraries, facesurv.components (the composition root), the flows and the demo inside the
command bodies only, so `facesurv --help` stays fast and nothing below depends on the CLI.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

COMMAND_MODULES = (
    "init", "cohort", "align", "generator", "project", "validate", "features",
    "train", "promote", "flows", "serve", "score", "audit", "demo", "edit",
)

app = typer.Typer(
    name="facesurv",
    help="Survival prediction from portrait photos and clinical data: a feature-store-backed MLOps platform.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"facesurv.cli.{name}_cmd").register(app)


def _quiet_third_parties() -> None:
    # A closed network: these libraries would otherwise try to phone home.
    for key, value in (
        ("DVC_NO_ANALYTICS", "1"), ("FEAST_USAGE", "False"), ("MLFLOW_DISABLE_TELEMETRY", "true"),
        ("GX_ANALYTICS_ENABLED", "false"), ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
        ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"), ("DO_NOT_TRACK", "1"),
    ):
        os.environ.setdefault(key, value)


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM (a scheduler or supervisor stopping us) into SystemExit, so exit handlers
    run: Prefect stops its ephemeral API server from one, which a bare SIGTERM left running."""
    import signal

    def _stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _stop)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; bad input ends in one line on stderr and a non-zero exit."""
    from ground.errors import FacesurvError

    if argv is None:  # a real process, not a caller (tests) sharing its own
        exit_cleanly_on_sigterm()
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    _quiet_third_parties()
    _register_all()
    command = typer.main.get_command(app)
    try:
        command.main(args=args, prog_name="facesurv", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if isinstance(exc.code, int | None) else 1
    except FacesurvError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: one line, not a traceback
        if debug:
            raise
        msg = str(exc).splitlines()[0] if str(exc) else ""
        print(f"error: {type(exc).__name__}: {msg} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0
