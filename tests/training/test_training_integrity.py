"""Registered models are hashed file by file and checked at every load: a tampered coefficient,
an edited code file, a dropped-in pickle or a missing file is refused with the file named, and
nothing from the artifact store runs before its hash matched."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlparse

import numpy as np
import pytest

from training.integrity import (
    DIGEST_TAG,
    MANIFEST_TAG,
    ArtifactIntegrityError,
    manifest_document,
    manifest_tags,
    recorded_manifest,
    tree_manifest,
    verify_tree,
)

NAME = "integrity-model"


@pytest.fixture(scope="module")
def registry(cohort_df, fast_params, tmp_path_factory):
    """A fresh store holding version 1 of NAME (a fitted CoxPH, logged and registered like training does)."""
    import mlflow

    from training.models import factory
    from training.preprocess import clinical_feature_columns
    from training.pyfunc import log_served_model
    from training.registry import CHAMPION, register_version
    from training.runs import open_run

    root = tmp_path_factory.mktemp("integrity")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment("integrity", artifact_location=(root / "artifacts").as_uri())
    num, cat = clinical_feature_columns(cohort_df)
    model = factory("coxph_clinical", fast_params.training, numeric=num, categorical=cat)().fit(cohort_df)
    with open_run(client, experiment_id=exp, name="integrity") as run:
        model_uri, files = log_served_model(client, run.run_id, "coxph_clinical", model, example_df=cohort_df,
                                            horizons=[365, 1825], workdir=root / "work", pip_requirements=["mlflow"])
    version = register_version(client, name=NAME, model_uri=model_uri, run_id=run.run_id,
                               tags=manifest_tags(files))
    client.set_registered_model_alias(NAME, CHAMPION, version)
    store = Path(unquote(urlparse(client.get_model_version_download_uri(NAME, version)).path))
    return SimpleNamespace(uri=uri, client=client, model=model, files=files, store=store, model_uri=model_uri,
                           run_id=run.run_id, version=version)


@contextlib.contextmanager
def tampered(path: Path, data: bytes | None):
    """Replace (or with data=None delete) a file in the artifact store; restore it afterwards."""
    existed = path.exists()
    original = path.read_bytes() if existed else None
    try:
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)
        yield path
    finally:
        if existed:
            path.write_bytes(original)
        elif path.exists():
            path.unlink()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _load(registry):
    from training.pyfunc import load_served

    return load_served(registry.uri, NAME, "champion")


def test_manifest_records_every_logged_file(registry, repo_root):
    files = registry.files
    assert {"MLmodel", "served_model.py", "requirements.txt", "artifacts/model/model.json",
            "artifacts/model/preprocessor.json", "artifacts/model/baseline.json"} <= set(files)
    assert files == tree_manifest(registry.store)
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".joblib"))]
    mlmodel = (registry.store / "MLmodel").read_text()
    assert "model_code_path" in mlmodel and "python_model:" not in mlmodel
    # the code MLflow runs at load is this project's file, byte for byte
    assert (registry.store / "served_model.py").read_bytes() == (repo_root / "training/served_model.py").read_bytes()
    tags = registry.client.get_model_version(NAME, registry.version).tags
    assert json.loads(tags[MANIFEST_TAG])["files"] == files and len(tags[DIGEST_TAG]) == 64


def test_verified_load_predicts_like_the_fitted_model(registry, cohort_df):
    from training.pyfunc import load_verified

    pyfunc, inner = _load(registry)
    np.testing.assert_array_equal(inner.predict_risk(cohort_df), registry.model.predict_risk(cohort_df))
    out = pyfunc.predict(cohort_df.drop(columns=["time_days", "event"]).head(4))
    assert list(out.columns) == ["risk_score", "risk_percentile", "survival_365d", "survival_1825d"]
    v = load_verified(registry.client, NAME, alias="champion", tracking_uri=registry.uri)
    assert v.manifest_sha256 == registry.client.get_model_version(NAME, registry.version).tags[DIGEST_TAG]


def test_tampered_coefficient_is_refused_naming_the_file(registry):
    path = registry.store / "artifacts" / "model" / "model.json"
    doc = json.loads(path.read_text())
    doc["coef"][0] = doc["coef"][0] * 10  # a plausible edit: still a valid model, only the numbers differ
    with tampered(path, json.dumps(doc, indent=1, sort_keys=True).encode()):
        with pytest.raises(ArtifactIntegrityError,
                           match=rf"^model {NAME} v1: artifact artifacts/model/model.json sha256 mismatch "
                                 r"\(recorded [0-9a-f]{12}…, found [0-9a-f]{12}…\); refusing to load"):
            _load(registry)
    _load(registry)  # control: restored, it loads


def test_one_flipped_byte_anywhere_is_refused(registry):
    for rel in ("artifacts/model/baseline.json", "MLmodel", "requirements.txt"):
        path = registry.store / rel
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        with tampered(path, bytes(data)), pytest.raises(ArtifactIntegrityError, match=f"artifact {rel} sha256 mismatch"):
            _load(registry)


def test_pickle_dropped_into_the_model_never_runs(registry, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(marker))
    for rel in ("artifacts/model/estimator.pkl", "python_model.pkl"):
        with tampered(registry.store / rel, payload), pytest.raises(
                ArtifactIntegrityError, match=f"artifact {rel} was not recorded at registration"):
            _load(registry)
    assert not marker.exists()


def test_mlmodel_rewritten_to_unpickle_a_wrapper_never_runs(registry, tmp_path):
    """The classic attack: MLmodel pointed at a cloudpickled python_model. Plain MLflow runs it."""
    import mlflow
    import yaml

    marker = tmp_path / "pwned"
    meta = yaml.safe_load((registry.store / "MLmodel").read_text())
    conf = meta["flavors"]["python_function"]
    conf.pop("model_code_path")
    conf["python_model"] = "python_model.pkl"
    with tampered(registry.store / "MLmodel", yaml.safe_dump(meta).encode()), \
            tampered(registry.store / "python_model.pkl", pickle.dumps(_Payload(marker))):
        with pytest.raises(ArtifactIntegrityError, match="artifact MLmodel sha256 mismatch"):
            _load(registry)
        assert not marker.exists()
        # control: MLflow alone would have executed the payload, so the refusal above is what saved us
        with contextlib.suppress(Exception):
            mlflow.pyfunc.load_model(str(registry.store))
        assert marker.exists()


def test_edited_served_code_never_runs(registry, tmp_path):
    marker = tmp_path / "pwned"
    path = registry.store / "served_model.py"
    evil = path.read_bytes() + f"\nimport os\nos.system('touch {marker}')\n".encode()
    with tampered(path, evil), pytest.raises(ArtifactIntegrityError, match="artifact served_model.py sha256 mismatch"):
        _load(registry)
    assert not marker.exists()


def test_missing_and_linked_files_are_refused(registry, tmp_path):
    with tampered(registry.store / "artifacts/model/preprocessor.json", None), pytest.raises(
            ArtifactIntegrityError, match="artifact artifacts/model/preprocessor.json is missing"):
        _load(registry)
    link = registry.store / "artifacts/model/linked.json"
    for target in ("model.json", tmp_path):  # inside the store (copied: an extra file), outside (MLflow refuses)
        link.symlink_to(target)
        try:
            with pytest.raises(ArtifactIntegrityError, match="linked.json was not recorded|outside the artifact"):
                _load(registry)
        finally:
            link.unlink()


def test_mlflows_own_download_marker_is_tolerated(registry):
    """A plain MLflow load of models:/NAME/1 writes registered_model_meta into a local store; MLflow never
    reads it, so it must not make the model unservable (it is dropped from the verified copy)."""
    import mlflow

    from training.runs import scoped_tracking_uri

    marker = registry.store / "registered_model_meta"
    try:
        with scoped_tracking_uri(registry.uri):  # a plain MLflow user sets the process-wide URI
            mlflow.pyfunc.load_model(f"models:/{NAME}/{registry.version}")
        assert marker.is_file()
        _load(registry)
        with tampered(registry.store / "artifacts/model/registered_model_meta", b"x"), pytest.raises(
                ArtifactIntegrityError, match="artifacts/model/registered_model_meta was not recorded"):
            _load(registry)  # only MLflow's own file at the model root is tolerated
    finally:
        marker.unlink(missing_ok=True)


def test_version_without_manifest_is_refused(registry):
    """A version registered before hashes were recorded (or by hand) is never loaded unverified."""
    from training.pyfunc import load_verified
    from training.runs import scoped_tracking_uri

    with scoped_tracking_uri(registry.uri):  # MLflow's SQL registry resolves models:/<id> through it
        mv = registry.client.create_model_version(NAME, registry.model_uri, run_id=registry.run_id)
    with pytest.raises(ArtifactIntegrityError, match=rf"model {NAME} v{mv.version} has no recorded artifact "
                                                     r"manifest.*retrain and promote a new version"):
        load_verified(registry.client, NAME, version=str(mv.version), tracking_uri=registry.uri)


def test_manifest_tag_edited_without_its_digest_is_refused(registry):
    from training.pyfunc import load_verified
    from training.runs import scoped_tracking_uri

    files = dict(registry.files)
    files["artifacts/model/model.json"] = "0" * 64
    with scoped_tracking_uri(registry.uri):
        mv = registry.client.create_model_version(NAME, registry.model_uri, run_id=registry.run_id,
                                                  tags={**manifest_tags(registry.files),
                                                        MANIFEST_TAG: manifest_document(files)})
    with pytest.raises(ArtifactIntegrityError, match="does not match its digest tag"):
        load_verified(registry.client, NAME, version=str(mv.version), tracking_uri=registry.uri)


def test_score_champion_refuses_a_tampered_champion(registry, cohort_df, fast_params):
    """Training re-scores the old champion through the same verified load; a refusal is recorded."""
    from training.champion import score_champion

    train_df, test_df = cohort_df.iloc[:150], cohort_df.iloc[150:]
    ok = score_champion(registry.client, NAME, train_df, test_df, params=fast_params, tracking_uri=registry.uri)
    assert "metrics" in ok and ok["artifacts_sha256"] == manifest_tags(registry.files)[DIGEST_TAG]
    path = registry.store / "artifacts" / "model" / "baseline.json"
    with tampered(path, path.read_bytes().replace(b"1", b"2", 1)):
        res = score_champion(registry.client, NAME, train_df, test_df, params=fast_params, tracking_uri=registry.uri)
    assert res["error"].startswith("ArtifactIntegrityError: model integrity-model v1: artifact "
                                   "artifacts/model/baseline.json sha256 mismatch")


def test_manifest_units(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.json").write_text("1")
    (tmp_path / "MLmodel").write_text("m")
    files = tree_manifest(tmp_path)
    assert list(files) == ["MLmodel", "a/x.json"]
    verify_tree(tmp_path, files, label="model m v1")
    with pytest.raises(ArtifactIntegrityError, match=r"artifact a/x.json sha256 mismatch .*\(1 more file\(s\) differ\)"):
        verify_tree(tmp_path, {**files, "a/x.json": "0" * 64, "gone.txt": "1" * 64}, label="model m v1")
    for bad in ({"../escape": "0" * 64}, {"/abs": "0" * 64}, {"a/x.json": "not-a-hash"}, {}):
        doc = manifest_document(bad)
        with pytest.raises(ArtifactIntegrityError, match="malformed"):
            recorded_manifest({MANIFEST_TAG: doc, DIGEST_TAG: manifest_tags(bad)[DIGEST_TAG]}, label="m")
    os.mkfifo(tmp_path / "a" / "fifo")
    with pytest.raises(ArtifactIntegrityError, match="a/fifo is not a regular file"):
        tree_manifest(tmp_path, label="m")


UNSAFE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "joblib", "dill", "shelve", "marshal"}


def _unsafe_uses(path: Path) -> list[str]:
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        found += [f"{path.name}:{node.lineno} imports {m}" for m in mods if m.split(".")[0] in UNSAFE_MODULES]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            kw = {k.arg: k.value for k in node.keywords}
            if name in ("read_pickle", "to_pickle"):
                found.append(f"{path.name}:{node.lineno} calls {name}")
            # torch.load unpickles unless weights_only=True; np.load only with allow_pickle=True
            if name == "load" and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch" and not (
                    isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                found.append(f"{path.name}:{node.lineno} calls torch.load without weights_only=True")
            if name == "load" and isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value:
                found.append(f"{path.name}:{node.lineno} calls load(allow_pickle=True)")
    return found


@pytest.mark.parametrize("package", ["training", "serving"])
def test_training_and_serving_never_unpickle(repo_root, package):
    """Models are JSON + safetensors; nothing on the model path may import a pickle library."""
    bad = [u for p in sorted((repo_root / package).rglob("*.py")) for u in _unsafe_uses(p)]
    assert not bad, "pickle-capable loading in " + package + ":\n" + "\n".join(bad)


def test_unsafe_use_scanner_catches_what_it_claims(tmp_path):
    src = tmp_path / "x.py"
    src.write_text("import pickle\nfrom joblib import load\nimport torch\ntorch.load('f')\n"
                   "import numpy as np\nnp.load('f', allow_pickle=True)\ntorch.load('f', weights_only=True)\n")
    assert len(_unsafe_uses(src)) == 4


@pytest.mark.parametrize("change", ["python_model", "code", "outside", "loader", "no_code_path", "artifacts_list"])
def test_mlmodel_must_be_models_from_code(tmp_path, change):
    import yaml

    from training.integrity import check_models_from_code

    conf = {"loader_module": "mlflow.pyfunc.loaders.code_model", "model_code_path": "/src/served_model.py",
            "code": None, "artifacts": {"model": {"path": "artifacts/model", "uri": "/tmp/x"}}}
    (tmp_path / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": conf}}))
    check_models_from_code(tmp_path, label="m")  # the shape training writes
    bad = dict(conf)
    if change == "python_model":
        bad["python_model"] = "python_model.pkl"
    elif change == "code":
        bad["code"] = "code"
    elif change == "outside":
        bad["artifacts"] = {"model": {"path": "../../etc"}}
    elif change == "loader":
        bad["loader_module"] = "evil.module"
    elif change == "no_code_path":
        bad.pop("model_code_path")
    elif change == "artifacts_list":
        bad["artifacts"] = ["artifacts/model"]
    (tmp_path / "MLmodel").write_text(yaml.safe_dump({"flavors": {"python_function": bad}}))
    with pytest.raises(ArtifactIntegrityError, match="not a models-from-code pyfunc"):
        check_models_from_code(tmp_path, label="m")
