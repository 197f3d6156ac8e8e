"""End-to-end training: Table 1, MLflow runs, dataset inputs, registry aliases, the served pyfunc, promotion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ground.errors import DataError


def test_table1_has_every_model_with_cis(trained):
    res, _ = trained
    t = res.table1.set_index("model")
    assert list(t.index) == ["coxph_clinical", "coxnet_latent", "fusion"]
    for m in t.index:
        assert t.loc[m, "c_index_lo"] <= t.loc[m, "c_index"] <= t.loc[m, "c_index_hi"]
        assert 0 < t.loc[m, "ibs"] < 0.5
    # the latents carry most of the signal; fusion keeps it
    assert t.loc["coxnet_latent", "c_index"] > t.loc["coxph_clinical", "c_index"]
    assert t.loc["fusion", "c_index"] > 0.7
    assert res.health_direction is not None and res.health_direction.shape == (16,)


def test_mlflow_parent_and_nested_runs_with_datasets(trained, mlflow_store):
    from mlflow import MlflowClient

    res, _ = trained
    client = MlflowClient(tracking_uri=mlflow_store[0])
    parent = client.get_run(res.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["split_id"] == res.split.split_id
    assert parent.data.tags["dvc.photos"] == "md5-photos-1"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{res.parent_run_id}'")
    assert {r.info.run_name for r in children} == {"coxph_clinical", "coxnet_latent", "fusion"}
    fusion = next(r for r in children if r.info.run_name == "fusion")
    assert "c_index_lo" in fusion.data.metrics and "brier_365d" in fusion.data.metrics
    arts = {a.path for a in client.list_artifacts(fusion.info.run_id, "figures")}
    assert {"figures/fusion_calibration.png", "figures/fusion_km_tertiles.png",
            "figures/fusion_cindex_by_cancer_type.png"} <= arts
    inputs = parent.inputs.dataset_inputs
    assert {i.dataset.name for i in inputs} == {f"prognosis_v1-training-{res.split.split_id}",
                                                f"prognosis_v1-testing-{res.split.split_id}"}
    tags = {t.key: t.value for t in inputs[0].tags}
    assert tags["feature_service"] == "prognosis_v1" and tags["dvc.clinical"] == "md5-clinical-1"


def test_registered_versions_are_challengers_with_signatures(trained, mlflow_store):
    from mlflow import MlflowClient

    res, _ = trained
    client = MlflowClient(tracking_uri=mlflow_store[0], registry_uri=mlflow_store[0])
    assert set(res.model_versions) == {"test-prognosis", "test-prognosis-coxph-clinical",
                                       "test-prognosis-coxnet-latent"}
    for name, version in res.model_versions.items():
        mv = client.get_model_version_by_alias(name, "challenger")
        assert str(mv.version) == version and mv.tags["split_id"] == res.split.split_id
        assert float(mv.tags["test.c_index"]) == pytest.approx(res.evaluations[mv.tags["facesurv.model"]].point["c_index"])


def test_registered_versions_record_artifact_manifests(trained, mlflow_store):
    """Every registered version carries the sha256 of each of its logged files; the run logs them too."""
    from urllib.parse import unquote, urlparse

    from mlflow import MlflowClient

    from training.integrity import DIGEST_TAG, recorded_manifest, tree_manifest

    res, _ = trained
    client = MlflowClient(tracking_uri=mlflow_store[0], registry_uri=mlflow_store[0])
    assert set(res.artifact_digests) == set(res.model_versions)
    for name, version in res.model_versions.items():
        mv = client.get_model_version(name, version)
        files, digest = recorded_manifest(mv.tags, label=name)
        assert digest == res.artifact_digests[name]
        store = Path(unquote(urlparse(client.get_model_version_download_uri(name, version)).path))
        assert tree_manifest(store) == files
        assert {"MLmodel", "served_model.py", "artifacts/model/model.json"} <= set(files)
        assert not any(f.endswith(".pkl") for f in files)
        run = client.get_run(mv.run_id)
        assert run.data.tags[DIGEST_TAG] == digest
        assert "artifact_manifest.json" in {a.path for a in client.list_artifacts(mv.run_id)}
    fusion_files = recorded_manifest(client.get_model_version("test-prognosis", res.served_version).tags,
                                     label="fusion")[0]
    assert {"artifacts/model/members/coxnet_latent/model.json",
            "artifacts/model/members/coxph_clinical/preprocessor.json"} <= set(fusion_files)


def test_served_pyfunc_contract(trained, mlflow_store, cohort_df, fast_params):
    import mlflow

    from training.runs import scoped_tracking_uri

    res, _ = trained
    with scoped_tracking_uri(mlflow_store[0]):  # what a user of plain MLflow does
        model = mlflow.pyfunc.load_model("models:/test-prognosis@challenger")
    inputs = {c.name for c in model.metadata.signature.inputs.inputs}
    assert {"age", "sex", "cancer_type", "pnodes", "tgrade", "latent"} <= inputs
    request = cohort_df.drop(columns=["time_days", "event"]).head(6).copy()
    request["latent"] = [list(map(float, v)) for v in request["latent"]]  # JSON-like lists work too
    out = model.predict(request)
    assert list(out.columns) == ["risk_score", "risk_percentile", "survival_365d", "survival_1095d", "survival_1825d"]
    assert out["risk_percentile"].between(0, 100).all()
    s = out[["survival_365d", "survival_1095d", "survival_1825d"]].to_numpy()
    assert np.all((s > 0) & (s <= 1)) and np.all(np.diff(s, axis=1) <= 0)
    np.testing.assert_allclose(out["risk_score"], res.models["fusion"].predict_risk(request), rtol=1e-9)
    from training.pyfunc import health_direction_of, load_served

    _, inner = load_served(mlflow_store[0], "test-prognosis", "challenger")
    np.testing.assert_allclose(health_direction_of(inner), res.health_direction)
    # higher risk score -> lower survival
    assert np.all(np.diff(s[np.argsort(out["risk_score"].to_numpy()), 1]) <= 1e-12)


def test_promotion_gates_and_records(trained, cohort_df, mlflow_store, fast_params):
    import json

    from mlflow import MlflowClient

    from ground.config import with_overrides
    from training.gates import GatePolicy
    from training.pipeline import train
    from training.registry import promote, record_contracts

    res, split_path = trained
    uri, art = mlflow_store
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    strict = GatePolicy.from_params(with_overrides(fast_params, registry={"require_contracts": True}))
    kw = dict(tracking_uri=uri, model_name="test-prognosis", experiment="facesurv-training", artifact_root=art)
    # a table no contract checked: the contracts gate keeps it out, the comparisons pass as "no champion"
    blocked = promote(policy=strict, **kw)
    assert not blocked.promoted and blocked.status == "kept" and blocked.reason.startswith("gate(s) failed: contracts")
    assert [g["name"] for g in blocked.gates if not g["passed"]] == ["contracts"]
    record_contracts(tracking_uri=uri, model_name="test-prognosis", version=res.served_version,
                     sources=[{"kind": "clinical", "name": "abc", "sha256": "0" * 64, "passed": True}])
    first = promote(policy=strict, **kw)
    assert first.promoted and first.reason == "all 4 gates passed (no champion yet)"
    assert first.challenger_version == res.served_version
    assert str(client.get_model_version_by_alias("test-prognosis", "champion").version) == res.served_version
    mv = client.get_model_version("test-prognosis", res.served_version)
    assert mv.tags["gate.delta_c.passed"] == "true" and mv.tags["gate.delta_c.detail"] == "no champion"
    assert mv.tags["promotion.gates_passed"] == "true" and json.loads(mv.tags["gate.contracts.figures"])["sources"]
    again = promote(policy=strict, **kw)
    assert not again.promoted and "already the champion" in again.reason

    kw["policy"] = GatePolicy.from_params(fast_params)
    # a clinical-only challenger on the same frozen split: the champion cannot score it, so no comparison
    weak = with_overrides(fast_params, training={"models": ["coxph_clinical"], "fusion_members": ["coxph_clinical"]})
    res2 = train(cohort_df.drop(columns=["latent"]), params=weak, tracking_uri=uri, artifact_root=art,
                 split_path=split_path, data_versions={"clinical": "md5-clinical-1"})
    assert res2.split.split_id == res.split.split_id
    assert res2.champion_comparison["version"] == res.served_version
    assert "error" in res2.champion_comparison  # the champion needs latents this data lacks
    with pytest.raises(DataError, match="was not scored on the challenger's test split"):
        promote(**kw)
    # same data with latents: the champion is re-scored on the same patients, the weaker challenger is kept
    res3 = train(cohort_df, params=weak, tracking_uri=uri, artifact_root=art, split_path=split_path)
    champ_c = res3.champion_comparison["metrics"]["c_index"]
    # re-scored through the verified load: the comparison names the manifest it checked
    assert res3.champion_comparison["artifacts_sha256"] == res.artifact_digests["test-prognosis"]
    assert champ_c == pytest.approx(res.evaluations["fusion"].point["c_index"])
    kept = promote(**kw)
    assert not kept.promoted and kept.champion_version == res.served_version
    delta = next(g for g in kept.gates if g["name"] == "delta_c")
    assert not delta["passed"] and delta["figures"]["champion_c_index"] == pytest.approx(champ_c)
    assert delta["figures"]["ci_lo"] <= 0 < delta["figures"]["resamples"]
    mv = client.get_model_version("test-prognosis", res3.served_version)
    assert mv.tags["promotion.decision"] == "kept" and mv.tags["promotion.compared_to"] == res.served_version
    assert mv.tags["gate.delta_c.passed"] == "false" and mv.tags["promotion.gates_passed"] == "false"
    assert {f"gate.{g}.{k}" for g in ("delta_c", "calibration", "subgroups", "contracts")
            for k in ("passed", "detail", "figures")} <= set(mv.tags)
    run = client.get_run(kept.run_id)
    assert run.data.tags["promotion.decision"] == "kept" and "delta_c.delta" in run.data.metrics
    assert {a.path for a in client.list_artifacts(kept.run_id)} >= {"promotion.json", "gates.json", "promotion.png"}
    assert str(client.get_model_version_by_alias("test-prognosis", "champion").version) == res.served_version


def test_require_approval_waits_for_a_person(cohort_df, mlflow_store, fast_params, tmp_path):
    from mlflow import MlflowClient

    from ground.config import with_overrides
    from training.gates import GatePolicy
    from training.pipeline import train
    from training.registry import AWAITING, CHAMPION, alias_version, promote, record_decision

    uri, art = mlflow_store
    params = with_overrides(fast_params, registry={"model_name": "approval-prognosis"},
                            training={"models": ["coxph_clinical"], "fusion_members": ["coxph_clinical"]})
    res = train(cohort_df.drop(columns=["latent"]), params=params, tracking_uri=uri, artifact_root=art,
                split_path=tmp_path / "split.json")
    kw = dict(tracking_uri=uri, model_name="approval-prognosis", experiment="facesurv-training", artifact_root=art)
    d = promote(policy=GatePolicy.from_params(params), require_approval=True, **kw)
    assert d.status == AWAITING and not d.promoted and "--approve --version" in d.reason
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.get_model_version("approval-prognosis", res.served_version).tags["promotion.decision"] == AWAITING
    assert alias_version(client, "approval-prognosis", CHAMPION) is None
    h = record_decision(decision="approved", reason="reviewed the gates", by="dr. who", **kw)
    assert h.champion_before is None and h.champion_after == res.served_version and not h.override_gates
    assert str(client.get_model_version_by_alias("approval-prognosis", "champion").version) == res.served_version
    tags = client.get_model_version("approval-prognosis", res.served_version).tags
    assert (tags["decision"], tags["decision.by"], tags["decision.reason"]) == ("approved", "dr. who",
                                                                                 "reviewed the gates")
    with pytest.raises(DataError, match="a decision needs a reason"):
        record_decision(decision="approved", reason="  ", by="x", **kw)
    with pytest.raises(DataError, match="decision must be one of approved, rejected"):
        record_decision(decision="maybe", reason="r", by="x", **kw)
    with pytest.raises(DataError, match="has no version 99"):
        record_decision(decision="rejected", reason="r", by="x", version="99", **kw)


def test_table1_text_formats_cis(trained):
    from training.table1 import table1_text_rows

    header, rows = table1_text_rows(trained[0].table1, [365, 1095, 1825])
    assert header[3] == "Harrell C" and len(rows) == 3
    assert rows[0][3].count("(") == 1 and "-" in rows[0][3]


def test_no_champion_and_no_challenger_is_a_clear_error(mlflow_store):
    from training.registry import promote

    with pytest.raises(DataError, match="has no 'challenger' version; run `facesurv train` first"):
        promote(tracking_uri=mlflow_store[0], model_name="never-trained", policy=None,
                experiment="facesurv-training", artifact_root=mlflow_store[1])
