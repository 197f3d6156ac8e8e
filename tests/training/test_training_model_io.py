"""Saved models are data, not code: every model kind round-trips bit for bit through JSON and
safetensors, and anything malformed or unexpected is refused with a one-line DataError."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest

from ground.errors import DataError
from training.model_io import load_model, save_model

DAYS = np.array([30.0, 365.0, 1095.0, 1825.0, 5000.0])


@pytest.fixture(scope="module")
def fitted(cohort_df, fast_params):
    """One fitted model of every kind (fusion: coxph + coxnet + deepsurv_latent members)."""
    from training.fusion import FusionModel
    from training.models import factory
    from training.preprocess import clinical_feature_columns

    num, cat = clinical_feature_columns(cohort_df)
    t = fast_params.training
    models = {name: factory(name, t, numeric=num, categorical=cat)().fit(cohort_df)
              for name in ("coxph_clinical", "coxnet_latent", "deepsurv_clinical", "deepsurv_latent")}
    members = {n: models[n] for n in ("coxph_clinical", "coxnet_latent", "deepsurv_latent")}
    # in-sample member risks stand in for out-of-fold ones: this test is about the format
    import pandas as pd

    risks = pd.DataFrame({n: m.predict_risk(cohort_df) for n, m in members.items()})
    models["fusion"] = FusionModel(members, alpha=t.coxph_alpha, seed=t.seed).fit_stage2(
        risks, cohort_df["time_days"].to_numpy(float), cohort_df["event"].to_numpy(bool), min_events_per_feature=0)
    return models


def _same_predictions(a, b, df):
    np.testing.assert_array_equal(a.predict_risk(df), b.predict_risk(df))
    np.testing.assert_array_equal(a.predict_survival(df, DAYS), b.predict_survival(df, DAYS))
    r = a.predict_risk(df)
    np.testing.assert_array_equal(a.risk_percentile(r), b.risk_percentile(r))
    assert a.describe() == b.describe() and a.needs_latent == b.needs_latent and a.kind == b.kind


@pytest.mark.parametrize("name", ["coxph_clinical", "coxnet_latent", "deepsurv_clinical", "deepsurv_latent",
                                  "fusion"])
def test_round_trip_predicts_identically(fitted, cohort_df, tmp_path, name):
    model = fitted[name]
    back = load_model(save_model(model, tmp_path / "m"))
    assert type(back) is type(model)
    _same_predictions(model, back, cohort_df)
    files = sorted(p.relative_to(tmp_path / "m").as_posix() for p in (tmp_path / "m").rglob("*") if p.is_file())
    assert all(f.endswith((".json", ".safetensors")) for f in files), files
    if model.kind == "deepsurv":
        assert {"network.json", "network.safetensors"} <= set(files)
    if model.kind == "fusion":
        assert list(back.members) == list(model.members)
        assert "members/deepsurv_latent/network.safetensors" in files


def test_coxnet_round_trip_keeps_health_direction_and_cv_scores(fitted, tmp_path):
    m = fitted["coxnet_latent"]
    m.cv_scores_ = m.cv_scores_.copy()
    m.cv_scores_[0] = np.nan  # a fold without events: NaN must survive (as null) without breaking JSON
    back = load_model(save_model(m, tmp_path / "m"))
    np.testing.assert_array_equal(back.health_direction, m.health_direction)
    np.testing.assert_array_equal(back.cv_scores_, m.cv_scores_)
    assert back.alpha_ == m.alpha_
    text = (tmp_path / "m" / "model.json").read_text()
    assert "NaN" not in text and json.loads(text)["format_version"] == 1


def test_deepsurv_load_does_not_shift_the_torch_random_stream(fitted, tmp_path):
    import torch

    path = save_model(fitted["deepsurv_clinical"], tmp_path / "m")
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    load_model(path)
    np.testing.assert_array_equal(torch.rand(3).numpy(), expected.numpy())


def test_unfitted_model_and_non_empty_directory_are_refused(fast_params, fitted, tmp_path):
    from training.models import factory

    unfitted = factory("coxph_clinical", fast_params.training, numeric=("age",), categorical=())()
    with pytest.raises(DataError, match="not fitted"):
        save_model(unfitted, tmp_path / "u")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        save_model(fitted["coxph_clinical"], tmp_path / "full")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_dropped_in_pickle_never_runs(fitted, tmp_path):
    path = save_model(fitted["fusion"], tmp_path / "m")
    marker = tmp_path / "pwned"
    for where in (path, path / "members" / "coxph_clinical"):
        evil = where / "estimator.pkl"
        evil.write_bytes(pickle.dumps(_Payload(marker)))
        with pytest.raises(DataError, match=r"unexpected file 'estimator.pkl'.*refusing to load anything else"):
            load_model(path)
        evil.unlink()
    assert not marker.exists()
    load_model(path)  # control: the same directory without the intruder loads


def _edit(path, mutate):
    obj = json.loads(path.read_text())
    mutate(obj)
    path.write_text(json.dumps(obj))


@pytest.mark.parametrize("case, match", [
    ("coef_length", r"model.json: coef has 3 values, the model needs \d+"),
    ("coef_string", "coef must be a list of finite numbers"),
    ("kind", "unknown model kind 'os.system'"),
    ("newer", "model format version 2 is not supported .*upgrade facesurv"),
    ("format", "not a facesurv model"),
    ("extra_field", "unexpected field '__reduce__'"),
    ("scales", "scales must be positive"),
    ("levels", "levels must name exactly the categorical columns"),
    ("baseline", "increasing times"),
    ("nan", "not valid JSON"),
    ("deep", "not valid JSON"),
    ("missing", "file 'baseline.json' is missing"),
])
def test_malformed_coxph_is_refused(fitted, tmp_path, case, match):
    d = save_model(fitted["coxph_clinical"], tmp_path / "m")
    m, pre, base = d / "model.json", d / "preprocessor.json", d / "baseline.json"
    if case == "coef_length":
        _edit(m, lambda o: o.update(coef=[0.1, 0.2, 0.3]))
    elif case == "coef_string":
        _edit(m, lambda o: o["coef"].__setitem__(0, "0.1"))
    elif case == "kind":
        _edit(m, lambda o: o.update(kind="os.system"))
    elif case == "newer":
        _edit(m, lambda o: o.update(format_version=2))
    elif case == "format":
        _edit(m, lambda o: o.update(format="pickle"))
    elif case == "extra_field":
        _edit(m, lambda o: o.update(__reduce__="os.system"))
    elif case == "scales":
        _edit(pre, lambda o: o["scales"].__setitem__(0, 0.0))
    elif case == "levels":
        _edit(pre, lambda o: o["levels"].pop(next(iter(o["levels"]))))
    elif case == "baseline":
        _edit(base, lambda o: o["times"].reverse())
    elif case == "nan":
        m.write_text(m.read_text().replace(str(json.loads(m.read_text())["coef"][0]), "NaN", 1))
    elif case == "deep":
        m.write_text("[" * 100000 + "]" * 100000)
    elif case == "missing":
        base.unlink()
    with pytest.raises(DataError, match=match):
        load_model(d)


@pytest.mark.parametrize("case, match", [
    ("garbage", "not a readable safetensors file"),
    ("truncated", "not a readable safetensors file"),
    ("shape", r"weight .* the architecture needs"),
    ("arch", "in_features .* differs from the preprocessor"),
    ("activation", "activation 'os.system' is not one of"),
    ("header_bomb", "not a readable safetensors file"),
])
def test_malformed_deepsurv_network_is_refused(fitted, tmp_path, case, match):
    import struct

    import torch
    from safetensors.torch import load_file, save_file

    d = save_model(fitted["deepsurv_clinical"], tmp_path / "m")
    w = d / "network.safetensors"
    if case == "garbage":
        w.write_bytes(b"\x00" * 64)
    elif case == "truncated":
        w.write_bytes(w.read_bytes()[:-40])
    elif case == "shape":
        state = load_file(str(w))
        key = next(k for k in state if k.endswith("linear.weight"))
        state[key] = torch.zeros(state[key].shape[0], state[key].shape[1] + 1)
        save_file(state, str(w))
    elif case == "arch":
        _edit(d / "network.json", lambda o: o.update(in_features=o["in_features"] + 1))
    elif case == "activation":
        _edit(d / "network.json", lambda o: o.update(activation="os.system"))
        _edit(d / "model.json", lambda o: o["params"].update(activation="os.system"))
    elif case == "header_bomb":
        header = b'{"a":' * 50000 + b"1" + b"}" * 50000
        w.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(DataError, match=match):
        load_model(d)


def test_fusion_member_folders_are_checked(fitted, tmp_path):
    d = save_model(fitted["fusion"], tmp_path / "m")
    _edit(d / "model.json", lambda o: o["members"].__setitem__(0, "../../etc"))
    with pytest.raises(DataError, match="members must be a non-empty list of distinct simple names"):
        load_model(d)
    d2 = save_model(fitted["fusion"], tmp_path / "m2")
    shutil.rmtree(d2 / "members" / "coxnet_latent")
    with pytest.raises(DataError, match="member folder 'coxnet_latent' is missing"):
        load_model(d2)
    d3 = save_model(fitted["fusion"], tmp_path / "m3")
    shutil.copytree(d3 / "members" / "coxph_clinical", d3 / "members" / "extra_member")
    with pytest.raises(DataError, match="unexpected member folder 'extra_member'"):
        load_model(d3)
