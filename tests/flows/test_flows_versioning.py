"""The data repository: git + DVC, pointer commits, pushes, md5s for lineage."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from features.versioning import (
    data_revision,
    init_data_repo,
    remote_url_for,
    tracked_md5s,
    version_inputs,
)
from ground.errors import DataError


def _git_log(root: Path) -> list[str]:
    return subprocess.run(["git", "log", "--format=%s"], cwd=root, capture_output=True, text=True,
                          check=True).stdout.split("\n")[:-1]


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    root = init_data_repo(tmp_path / "data", remote_url=str(tmp_path / "remote"))
    (root / "photos").mkdir()
    (root / "photos" / "p1.png").write_bytes(b"photo one")
    (root / "clinical").mkdir()
    (root / "clinical" / "c.csv").write_text("patient_id\nP1\n")
    return root


def test_version_commits_pointers_pushes_and_reports_md5s(repo: Path, tmp_path: Path) -> None:
    rec = version_inputs(repo, ["photos", "clinical"], message="first")
    assert rec.committed and rec.rev == data_revision(repo)
    assert rec.files == {"photos/p1.png": hashlib.md5(b"photo one").hexdigest(),
                         "clinical/c.csv": hashlib.md5(b"patient_id\nP1\n").hexdigest()}
    assert set(rec.outs) == {"photos", "clinical"} and all(v.endswith(".dir") for v in rec.outs.values())
    tracked = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True).stdout.split()
    assert {"photos.dvc", "clinical.dvc", ".dvc/config"} <= set(tracked)
    assert "photos/p1.png" not in tracked  # content lives in DVC, not git
    md5 = rec.files["photos/p1.png"]
    assert (tmp_path / "remote" / "files" / "md5" / md5[:2] / md5[2:]).read_bytes() == b"photo one"
    assert rec.pushed >= 2


def test_unchanged_inputs_make_no_commit_and_new_ones_do(repo: Path) -> None:
    first = version_inputs(repo, ["photos", "clinical"], message="first")
    again = version_inputs(repo, ["photos", "clinical"], message="again")
    assert not again.committed and again.rev == first.rev and again.pushed == 0
    (repo / "photos" / "p2.png").write_bytes(b"photo two")
    third = version_inputs(repo, ["photos", "clinical"], message="third")
    assert third.committed and third.rev != first.rev
    assert set(third.files) == {"photos/p1.png", "photos/p2.png", "clinical/c.csv"}
    assert _git_log(repo) == ["third", "first", "facesurv: data repository"]


def test_init_is_idempotent_and_keeps_history(repo: Path, tmp_path: Path) -> None:
    rec = version_inputs(repo, ["photos"], message="v1")
    init_data_repo(repo, remote_url=str(tmp_path / "remote2"))
    assert data_revision(repo) is not None and rec.rev in subprocess.run(
        ["git", "log", "--format=%H"], cwd=repo, capture_output=True, text=True).stdout
    assert "remote2" in (repo / ".dvc" / "config").read_text()


def test_stale_git_index_lock_from_a_killed_run_is_cleared(repo: Path) -> None:
    (repo / ".git" / "index.lock").write_text("")
    rec = version_inputs(repo, ["photos"], message="after crash")
    assert rec.committed


def test_version_outside_a_data_repo_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a data repository"):
        version_inputs(tmp_path, ["photos"], message="x")


def test_version_with_nothing_to_track_is_refused(repo: Path) -> None:
    with pytest.raises(DataError, match="nothing to version"):
        version_inputs(repo, ["missing"], message="x")


def test_remote_url_resolution(tmp_path: Path) -> None:
    assert remote_url_for(None, tmp_path) == str(tmp_path.resolve() / "dvc-storage")
    assert remote_url_for("store", tmp_path) == str(tmp_path.resolve() / "store")
    assert remote_url_for("s3://bucket/prefix", tmp_path) == "s3://bucket/prefix"


def test_md5s_of_an_unversioned_out_are_empty(repo: Path) -> None:
    assert tracked_md5s(repo, ["photos"]) == ({}, {})


@pytest.mark.services
def test_push_to_an_s3_compatible_remote(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scale profile's remote: S3 API (moto's server standing in for MinIO/S3)."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="facesurv-data")
        init_data_repo(repo, remote_url="s3://facesurv-data/dvc", endpoint_url=endpoint)
        rec = version_inputs(repo, ["photos", "clinical"], message="to s3")
        keys = {o["Key"] for o in s3.list_objects_v2(Bucket="facesurv-data").get("Contents", [])}
        md5 = rec.files["photos/p1.png"]
        assert f"dvc/files/md5/{md5[:2]}/{md5[2:]}" in keys
        body = s3.get_object(Bucket="facesurv-data", Key=f"dvc/files/md5/{md5[:2]}/{md5[2:]}")["Body"].read()
        assert body == b"photo one"
    finally:
        server.stop()


def test_dvc_console_handlers_bound_to_a_closed_stream_do_not_break_versioning(tmp_path: Path) -> None:
    # `import dvc` binds handlers to the sys.stdout of that moment; under pytest's capture (or a
    # Prefect task's redirected output) that stream is later closed and DVC raised from every log call
    import io
    import logging

    import dvc.logger

    closed = io.StringIO()
    stale = dvc.logger.LoggerHandler(closed)
    logging.getLogger("dvc").addHandler(stale)
    closed.close()
    root = init_data_repo(tmp_path / "data", remote_url=str(tmp_path / "remote"))
    (root / "photos").mkdir()
    (root / "photos" / "p.png").write_bytes(b"x")
    assert version_inputs(root, ["photos"], message="one").committed
    assert stale not in logging.getLogger("dvc").handlers


def test_the_data_repo_checks_out_plain_files_whatever_the_user_cache_type(repo: Path) -> None:
    # readers refuse links (docs/security.md): DVC must copy, never hard- or sym-link, into data/
    config = (repo / ".dvc" / "config").read_text()
    assert "type = \"reflink,copy\"" in config or "type = reflink,copy" in config
