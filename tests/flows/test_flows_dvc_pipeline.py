"""dvc.yaml: `dvc repro` builds the demo from scratch, a second one does nothing, metrics show."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

CODE = ("ground", "embedding", "features", "flows", "training", "facesurv", "demo")


def _dvc(root: Path, *args: str, env: dict[str, str]) -> str:
    proc = subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_dvc_repro_builds_then_is_up_to_date(repo_root, tmp_path, subprocess_env) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    for name in CODE:  # a copy of the code, so the repository's own tree is never touched
        shutil.copytree(repo_root / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(repo_root / "dvc.yaml", root / "dvc.yaml")
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["demo"]["patients"] = 60
    raw["projection"].update(steps=2, batch_size=32)
    raw["training"].update(deepsurv_epochs=3, fusion_folds=2)
    raw["evaluation"]["bootstrap"] = 5
    raw["contracts"]["max_projection_loss"] = 100.0
    raw["align"]["workers"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**subprocess_env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{subprocess_env['PATH']}",
           "PREFECT_HOME": str(tmp_path / "prefect")}
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, env=env)
    _dvc(root, "init", "-q", env=env)

    out = _dvc(root, "repro", env=env)
    for stage in ("cohort", "align", "project", "features", "train", "evaluate"):
        assert f"Running stage '{stage}'" in out
    metrics = json.loads((root / "pipeline" / "metrics.json").read_text())
    assert {"coxph_clinical", "fusion"} <= set(metrics["models"])
    assert 0.0 <= metrics["models"]["fusion"]["c_index"] <= 1.0
    manifest = (root / "pipeline" / "artifacts" / "aligned" / "manifest.csv").read_text()
    assert "astronaut" in manifest and ",aligned," in manifest  # the real face went through alignment

    again = _dvc(root, "repro", env=env)
    assert "Running stage" not in again and "up to date" in again
    shown = _dvc(root, "metrics", "show", env=env)
    assert "pipeline/metrics.json" in shown and "models.fusion.c_index" in shown
