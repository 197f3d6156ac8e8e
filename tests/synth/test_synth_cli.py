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

    from ground.workspace import Workspace

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
    for name in ("faces.parquet", "direction.npy", "outcome.csv", "clinical_model.json", "README.md", "summary.json"):
        assert (a / "truth" / name).is_file()
    assert not [p for p in a.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_clinical_csv_keeps_the_real_covariates_and_draws_the_outcome(two_runs):
    from features.cohort import clinical_columns, import_cohort

    ws, a, _ = two_runs
    p = ws.load_params().cohort
    full = import_cohort("gbsg2", seed=4, admission_start=p.admission_start,
                         admission_span_days=p.admission_span_days, record_lag_days=p.record_lag_days)
    got = pd.read_csv(a / "clinical.csv")
    assert list(got.columns) == clinical_columns("gbsg2")
    expected = full[full["photo_id"].isin(got["photo_id"])].reset_index(drop=True)
    expected = pd.read_csv(pd.io.common.StringIO(expected.to_csv(index=False)))
    covariates = [c for c in got.columns if c not in ("time_days", "event")]
    pd.testing.assert_frame_equal(got[covariates], expected[covariates])
    outcome = pd.read_csv(a / "truth" / "outcome.csv")
    assert np.array_equal(outcome["time_days"], got["time_days"]) and np.array_equal(outcome["event"], got["event"])
    assert not np.array_equal(got["time_days"], expected["time_days"])  # drawn, not the real follow-up


def test_truth_files(two_runs):
    _, a, _ = two_runs
    t = pq.read_table(a / "truth" / "faces.parquet")
    assert {"photo_id", "patient_id", "lp_face", "latent", "z", "w", "coordinate"} <= set(t.column_names)
    lat = np.stack(t.column("latent").to_pandas().to_list())
    assert lat.shape == (60, 512) and lat.dtype == np.float32
    d = np.load(a / "truth" / "direction.npy")
    assert d.shape == (512,) and d.dtype == np.float32 and np.linalg.norm(d) == pytest.approx(1, abs=1e-5)
    assert np.allclose(lat @ d, t.column("coordinate").to_numpy(), atol=1e-4)
    outcome = pd.read_csv(a / "truth" / "outcome.csv")
    assert {"lp_clin", "lp_face", "lp_total", "time_days", "event"} <= set(outcome.columns)
    info = json.loads((a / "cohort.json").read_text())
    assert info["generator_is_random_init"] is True and "STAND-IN" in info["statement"]
    assert info["generator"]["sha256"] and info["patients"] == 60 and info["cohort_kind"] == "rendered"
    assert info["rung"] == "rendered, random direction in w"
    assert "STAND-IN" in (a / "truth" / "README.md").read_text()
    summary = json.loads((a / "truth" / "summary.json").read_text())
    assert set(summary["ceiling_c_index"]) == {"face", "clinical", "total"}


def _face_bytes(d: Path) -> dict[str, bytes]:
    files = {str(p.relative_to(d)): p.read_bytes() for p in sorted((d / "photos").iterdir())}
    files["truth/faces.parquet"] = (d / "truth" / "faces.parquet").read_bytes()
    return files


@pytest.mark.parametrize("kind", ["rendered", "real"])
def test_no_face_depends_on_the_outcome(synth_workspace, face_folder, tmp_path, kind):
    """Same --seed, only --survival-seed changed: every photo and face truth is byte-identical
    while the drawn times differ."""
    extra = ["--patients", "30"] + (["--faces", str(face_folder), "--base", "whas500"] if kind == "real" else [])
    a, b = tmp_path / "a", tmp_path / "b"
    assert _run(synth_workspace, a, *extra, "--survival-seed", "1") == 0
    assert _run(synth_workspace, b, *extra, "--survival-seed", "2") == 0
    fa, fb = _face_bytes(a), _face_bytes(b)
    assert fa.keys() == fb.keys() and len(fa) == 31
    assert [k for k in fa if fa[k] != fb[k]] == []
    ta = pd.read_csv(a / "clinical.csv")["time_days"]
    tb = pd.read_csv(b / "clinical.csv")["time_days"]
    assert not ta.equals(tb)
    oa, ob = pd.read_csv(a / "truth" / "outcome.csv"), pd.read_csv(b / "truth" / "outcome.csv")
    assert np.array_equal(oa["lp_total"], ob["lp_total"])


def test_real_faces_cohort(synth_workspace, face_folder, tmp_path, capsys):
    out = tmp_path / "c"
    assert _run(synth_workspace, out, "--patients", "20", "--faces", str(face_folder), "--base", "whas500") == 0
    text = capsys.readouterr().out
    assert "real photos" in text and "rung: real faces" in text and "REAL FACES" in text
    faces = pd.read_parquet(out / "truth" / "faces.parquet")
    clinical = pd.read_csv(out / "clinical.csv")
    assert faces["photo_file"].is_unique and len(faces) == 20
    assert sorted(p.name for p in (out / "photos").iterdir()) == sorted(f"{p}.jpg" for p in clinical["photo_id"])
    for pid, name in zip(faces["photo_id"], faces["photo_file"], strict=True):
        assert (out / "photos" / f"{pid}.jpg").read_bytes() == (face_folder / name).read_bytes()
    assert np.allclose(faces["gap"], faces["photo_age"] - clinical.set_index("photo_id").loc[faces["photo_id"], "age"].to_numpy())
    info = json.loads((out / "cohort.json").read_text())
    assert info["cohort_kind"] == "real" and info["generator"] is None


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
    (["--hr-per-decade", "0"], r"--hr-per-decade must be > 0"),
    (["--direction", "up"], r"synth.direction must be 'random' or 'visible'"),
    (["--faces", "/nonexistent/faces"], r"no such face folder; pass --faces DIR"),
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
    from demo.cohort import make_synth_cohort
    from ground.errors import DataError

    with pytest.raises(DataError, match="--strength must be >= 0"):
        make_synth_cohort(params, tmp_path / "c", strength=-0.5)
