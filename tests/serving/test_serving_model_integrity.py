"""The server loads a champion only after every file matched the manifest recorded at registration;
the served score's lineage names that manifest. (Issue 13: a pickle payload in the MLflow store
ran when `facesurv serve` started.)"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlparse

import pytest

from tests.serving.conftest import MODEL_NAME
from tests.serving.reference_champion import FEATURES, cohort, register_reference_champion


@pytest.fixture(scope="module")
def own_registry(tmp_path_factory, repo_root):
    """A champion of our own: these tests tamper with its files (and put them back)."""
    import mlflow

    from ground.workspace import Workspace

    root = tmp_path_factory.mktemp("integrity-ws")
    shutil.copyfile(repo_root / "params.yaml", root / "params.yaml")
    ws = Workspace(root)
    uri = register_reference_champion(ws.mlflow_dir, model_name=MODEL_NAME)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    store = Path(unquote(urlparse(client.get_model_version_download_uri(MODEL_NAME, "1")).path))
    return SimpleNamespace(workspace=ws, uri=uri, client=client, store=store)


@contextlib.contextmanager
def tampered(path: Path, data: bytes):
    original = path.read_bytes() if path.exists() else None
    path.write_bytes(data)
    try:
        yield path
    finally:
        if original is None:
            path.unlink()
        else:
            path.write_bytes(original)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_served_record_names_the_verified_manifest(own_registry):
    from serving.scoring import DataFrameFeatureReader, LineageContext, Scorer, load_champion
    from training.integrity import DIGEST_TAG

    champ = load_champion(MODEL_NAME, tracking_uri=own_registry.uri)
    digest = own_registry.client.get_model_version(MODEL_NAME, "1").tags[DIGEST_TAG]
    assert champ.artifacts_sha256 == digest and len(digest) == 64
    reader = DataFrameFeatureReader(cohort(), feature_columns=FEATURES, timestamp_column="record_known_at",
                                    feature_service="prognosis_v1")
    scorer = Scorer(model=champ, read_features=reader, context=LineageContext("test", "p", {}))
    rec = scorer.score_patient("gbsg2-00001", requested_by="tester")
    assert rec["model"]["artifacts_sha256"] == digest and rec["model"]["version"] == "1"


def test_tampered_coefficient_refuses_to_serve(own_registry):
    from serving.scoring import load_champion
    from training.integrity import ArtifactIntegrityError

    path = own_registry.store / "artifacts" / "estimator.json"
    with tampered(path, path.read_bytes().replace(b'"coef": [', b'"coef": [1', 1)):
        with pytest.raises(ArtifactIntegrityError, match=rf"^model {MODEL_NAME} v1: artifact artifacts/estimator.json "
                                                         r"sha256 mismatch \(recorded [0-9a-f]{12}…, found "):
            load_champion(MODEL_NAME, tracking_uri=own_registry.uri)
    load_champion(MODEL_NAME, tracking_uri=own_registry.uri)  # control: restored, it serves


def test_legacy_champion_without_manifest_is_refused(own_registry):
    from serving.scoring import load_champion
    from training.integrity import ArtifactIntegrityError

    c = own_registry.client
    v1 = c.get_model_version(MODEL_NAME, "1")
    from training.runs import scoped_tracking_uri

    with scoped_tracking_uri(own_registry.uri):  # MLflow resolves a models:/ source through the global URI
        legacy = c.create_model_version(MODEL_NAME, v1.source, run_id=v1.run_id)  # registered with no hashes
    c.set_registered_model_alias(MODEL_NAME, "legacy", legacy.version)
    with pytest.raises(ArtifactIntegrityError, match=r"has no recorded artifact manifest.*retrain"):
        load_champion(MODEL_NAME, tracking_uri=own_registry.uri, alias="legacy")


@pytest.mark.slow
def test_facesurv_serve_refuses_a_pickle_payload_and_never_runs_it(own_registry, repo_root, tmp_path):
    """The issue's attack, end to end: the server exits with one line naming the file; the payload never ran."""
    marker = tmp_path / "pwned"
    env = {k: v for k, v in os.environ.items() if k not in ("FACESURV_API_TOKENS", "FACESURV_WORKSPACE")}
    with tampered(own_registry.store / "artifacts" / "estimator.pkl", pickle.dumps(_Payload(marker))):
        r = subprocess.run([sys.executable, "-m", "facesurv", "serve", "--workspace", str(own_registry.workspace.root),
                            "--port", "1", "--no-photo"], cwd=repo_root, env=env, capture_output=True, text=True,
                           timeout=300)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "artifact artifacts/estimator.pkl was not recorded at registration" in out, out[-2000:]
    assert "Traceback" not in out
    assert not marker.exists()


def test_loading_the_champion_leaves_mlflows_global_uris_alone(own_registry, tmp_path):
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_state
    from mlflow.tracking._tracking_service import utils as tracking_state

    from serving.scoring import load_champion
    from training.runs import scoped_tracking_uri

    elsewhere = (tmp_path / "elsewhere").as_uri()
    registry_before = registry_state._registry_uri  # "never set" must come back as never set
    with scoped_tracking_uri(elsewhere):
        mlflow.set_registry_uri(elsewhere)
        try:
            load_champion(MODEL_NAME, tracking_uri=own_registry.uri)
            assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (elsewhere, elsewhere)
        finally:
            registry_state._registry_uri = registry_before
            os.environ.pop("MLFLOW_REGISTRY_URI", None)
    assert tracking_state._tracking_uri != elsewhere
