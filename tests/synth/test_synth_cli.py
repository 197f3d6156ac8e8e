"""`facesurv cohort synth`: files, schema, determinism, atomicity and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from facesurv.cli import main


def _run(ws, out: Path, *extra: str) -> int:
    return main(["cohort", "synth", "--out", str(out), "--seed", "4", "--workspace", str(ws.root), *extra])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same command twice into different directories (module-scoped: it renders); the
    settings are those of the synth_workspace fixture."""
    import shutil

    import yaml

    from facesurv.workspace import Workspace

    root = tmp_path_factory.mktemp("synthcli")
    ws = Workspace(root / "ws")
    ws.root.mkdir()
    repo = Path(__file__).resolve().parents[2]
    shutil.copyfile(repo / "params.yaml", ws.params_path)
    raw = yaml.safe_load(ws.params_path.read_text())
    raw["generator"].update({"resolution": 16, "channel_max": 16})
    raw["synth"].update({"direction_samples": 8, "direction_iterations": 10, "patients": 60})
    ws.params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    a, b = root / "a", root / "b"
    assert _run(ws, a) == 0
    assert _run(ws, b) == 0
    return ws, a, b


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_layout_and_photos(two_runs):
    _, a, _ = two_runs
    photos = sorted((a / "photos").glob("*.png"))
    clinical = pd.read_csv(a / "clinical.csv")
    assert len(photos) == 60 == len(clinical)
    assert [p.stem for p in photos] == sorted(clinical["photo_id"])
    with Image.open(photos[0]) as im:
        assert im.size == (16, 16) and im.mode == "RGB"
        assert "STAND-IN GENERATOR" in im.info["Comment"]
    for name in ("latents.parquet", "direction.npy", "oracle.csv", "README.md", "summary.json"):
        assert (a / "truth" / name).is_file()
    assert not [p for p in a.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_clinical_csv_is_the_import_for_the_same_patients(two_runs):
    from features.cohort import clinical_columns, import_cohort

    ws, a, _ = two_runs
    p = ws.load_params().cohort
    full = import_cohort("gbsg2", seed=4, admission_start=p.admission_start,
                         admission_span_days=p.admission_span_days, record_lag_days=p.record_lag_days)
    got = pd.read_csv(a / "clinical.csv")
    assert list(got.columns) == clinical_columns("gbsg2")
    expected = full[full["photo_id"].isin(got["photo_id"])].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, pd.read_csv(pd.io.common.StringIO(expected.to_csv(index=False))))
    assert abs(got["event"].mean() - full["event"].mean()) < 1 / 60 + 1e-9  # stratified


def test_truth_files(two_runs):
    _, a, _ = two_runs
    t = pq.read_table(a / "truth" / "latents.parquet")
    assert {"photo_id", "latent", "z", "w", "along_d"} <= set(t.column_names)
    lat = np.stack(t.column("latent").to_pandas().to_list())
    assert lat.shape == (60, 512) and lat.dtype == np.float32
    d = np.load(a / "truth" / "direction.npy")
    assert d.shape == (512,) and d.dtype == np.float32 and np.linalg.norm(d) == pytest.approx(1, abs=1e-5)
    assert np.allclose(lat @ d, t.column("along_d").to_numpy(), atol=1e-4)
    oracle = pd.read_csv(a / "truth" / "oracle.csv")
    assert {"photo_id", "oracle_risk", "clinical_risk", "fold"} <= set(oracle.columns)
    info = json.loads((a / "cohort.json").read_text())
    assert info["generator_is_random_init"] is True and "STAND-IN" in info["statement"]
    assert info["generator"]["sha256"] and info["patients"] == 60
    assert "STAND-IN" in (a / "truth" / "README.md").read_text()


def test_deterministic_for_a_seed(two_runs):
    _, a, b = two_runs
    fa, fb = _files(a), _files(b)
    assert fa.keys() == fb.keys()
    different = [k for k in fa if fa[k] != fb[k]]
    assert different == []


def test_stdout_says_stand_in(synth_workspace, tmp_path, capsys):
    assert _run(synth_workspace, tmp_path / "c", "--patients", "20") == 0
    text = capsys.readouterr().out
    assert "STAND-IN GENERATOR" in text and "20 patients" in text


def test_rerun_replaces_an_earlier_cohort(synth_workspace, tmp_path):
    out = tmp_path / "c"
    assert _run(synth_workspace, out, "--patients", "20") == 0
    assert _run(synth_workspace, out, "--patients", "30") == 0
    assert len(list((out / "photos").iterdir())) == 30


def test_failure_leaves_no_half_cohort(synth_workspace, tmp_path, monkeypatch, capsys):
    import features.synth_cohort as sc

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(sc.np, "save", boom)  # direction.npy is written after the photos
    out = tmp_path / "c"
    assert _run(synth_workspace, out, "--patients", "20") != 0
    assert "disk full" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir() if p.name != "ws"] == []  # ws: the workspace


def test_refuses_a_non_cohort_directory(synth_workspace, tmp_path, capsys):
    out = tmp_path / "c"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _run(synth_workspace, out) == 2
    assert "not empty and not a synth cohort" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(("args", "message"), [
    (["--base", "nope"], r"unknown base dataset 'nope'; choose one of: gbsg2"),
    (["--patients", "5000"], r"--patients 5000 is more than the 686 patients of gbsg2"),
    (["--strength", "-1"], r"--strength must be >= 0, got -1"),
    (["--patients", "-3"], r"--patients must be >= 0"),
])
def test_bad_arguments_are_one_line_errors(synth_workspace, tmp_path, capsys, args, message):
    import re

    rc = _run(synth_workspace, tmp_path / "c", *args)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert re.search(message, err) and err.startswith("error: ") and "\n" not in err
    assert not (tmp_path / "c").exists()


def test_make_synth_cohort_errors_name_the_option(params, tmp_path):
    from facesurv.errors import DataError
    from flows.synth_cohort import make_synth_cohort

    with pytest.raises(DataError, match="--strength must be >= 0"):
        make_synth_cohort(params, tmp_path / "c", strength=-0.5)
