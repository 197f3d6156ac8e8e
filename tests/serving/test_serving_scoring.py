"""Lineage pieces the scorer records: where the photos came from."""

from __future__ import annotations


def test_photo_lineage_names_the_data_repository_commit(tmp_path) -> None:
    # the workspace root is not a git repository; the commit that holds photos.dvc is data/'s
    from features.versioning import data_revision, init_data_repo, version_inputs
    from serving.scoring import dvc_photo_version

    data = init_data_repo(tmp_path / "ws" / "data", remote_url=str(tmp_path / "remote"))
    (data / "photos").mkdir()
    (data / "photos" / "p.png").write_bytes(b"pixels")
    rec = version_inputs(data, ["photos"], message="photos", push=False)
    info = dvc_photo_version(data)
    assert info["git_rev"] == data_revision(data) == rec.rev
    assert info["dvc_md5"] == rec.outs["photos"]
    assert dvc_photo_version(tmp_path / "nowhere") == {"path": str(tmp_path / "nowhere" / "photos"),
                                                      "dvc_md5": None, "git_rev": None}
