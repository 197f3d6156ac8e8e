from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from facesurv.cli import COMMAND_MODULES, main


def test_help_lists_commands(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "cohort" in out and "init" in out


def test_every_command_has_help(capsys) -> None:
    import typer

    from facesurv.cli import _register_all, app

    _register_all()
    group = typer.main.get_command(app)
    names = list(group.commands)  # type: ignore[attr-defined]
    assert names
    for name in names:
        assert main([name, "--help"]) == 0, name
    capsys.readouterr()


def test_command_modules_exist_or_are_pending() -> None:
    here = Path(__file__).resolve().parents[2] / "facesurv" / "cli"
    present = {p.stem.removesuffix("_cmd") for p in here.glob("*_cmd.py")}
    assert present <= set(COMMAND_MODULES), present - set(COMMAND_MODULES)


def test_unknown_command_exits_nonzero(capsys) -> None:
    assert main(["frobnicate"]) != 0


def test_init_and_params(tmp_path: Path, capsys) -> None:
    ws = tmp_path / "w"
    assert main(["init", str(ws)]) == 0
    assert (ws / "params.yaml").is_file()
    capsys.readouterr()
    assert main(["params", "--workspace", str(ws)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["cohort"]["base"] == "gbsg2" and len(printed["params_hash"]) == 64


def test_workspace_from_environment(tmp_path: Path, capsys, monkeypatch) -> None:
    assert main(["params"]) != 0 or Path.cwd().joinpath("params.yaml").exists()
    capsys.readouterr()
    ws = tmp_path / "envws"
    assert main(["init", str(ws)]) == 0
    monkeypatch.setenv("FACESURV_WORKSPACE", str(ws))
    assert main(["params"]) == 0


def test_error_has_no_traceback_but_debug_does(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "facesurv", "params", "--workspace", str(tmp_path / "nowhere")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run([*cmd, "--debug"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_sigterm_lets_exit_handlers_run(tmp_path) -> None:
    # Prefect stops its ephemeral API server from an atexit handler; a bare SIGTERM skipped it
    # and left the server running after the command had gone
    import signal
    import subprocess
    import sys

    marker = tmp_path / "exit-handler-ran"
    code = ("import atexit, sys, time\n"
            "from facesurv.cli import exit_cleanly_on_sigterm\n"
            "exit_cleanly_on_sigterm()\n"
            "atexit.register(lambda: open(sys.argv[1], 'w').write('ran'))\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(marker)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert marker.read_text() == "ran"
