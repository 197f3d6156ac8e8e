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


def test_workspace_is_the_flag_then_the_environment_then_the_current_directory(tmp_path: Path, capsys,
                                                                               monkeypatch) -> None:
    """Each candidate workspace gets its own cohort.seed, so the printed params say which one was read."""
    import yaml

    from ground.config import load_params

    def make(name: str, seed: int) -> Path:
        ws = tmp_path / name
        assert main(["init", str(ws)]) == 0
        raw = yaml.safe_load((ws / "params.yaml").read_text())
        raw["cohort"]["seed"] = seed
        (ws / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        return ws

    def printed_params(argv: list[str]) -> dict:
        capsys.readouterr()
        assert main(argv) == 0
        return json.loads(capsys.readouterr().out)

    monkeypatch.delenv("FACESURV_WORKSPACE", raising=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    capsys.readouterr()
    # no flag, no variable, no params.yaml here: a one-line usage error naming where it looked
    assert main(["params"]) == 2
    assert capsys.readouterr().err == (f"error: {empty.resolve() / 'params.yaml'}: no params.yaml here "
                                       "(pass --workspace DIR, or run `facesurv init DIR`)\n")

    cwd_ws, env_ws, flag_ws = make("cwd", 11), make("env", 22), make("flag", 33)
    monkeypatch.chdir(cwd_ws)
    assert printed_params(["params"])["cohort"]["seed"] == 11
    monkeypatch.setenv("FACESURV_WORKSPACE", str(env_ws))  # the variable beats the current directory
    got = printed_params(["params"])
    assert got["cohort"]["seed"] == 22 and got["params_hash"] == load_params(env_ws / "params.yaml").params_hash
    # and --workspace beats the variable
    assert printed_params(["params", "--workspace", str(flag_ws)])["cohort"]["seed"] == 33


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
