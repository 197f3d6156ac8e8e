"""The scorer itself (serving/scoring.py), over the session's real champion: what it predicts,
which patients it refuses and why, and the lineage record every score is written with.

The expected numbers always come from the champion's own `predict` on the cohort's rows, so a
scorer that mixed up a batch's rows, dropped or renamed a model column, or relabelled a
survival horizon gives a different record."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re

import pandas as pd
import pytest

KNOWN = ["gbsg2-00001", "gbsg2-00002", "gbsg2-00003"]
CONTEXT = {"code_version": "abc123+dirty", "params_hash": "p" * 64,
           "photo_data": {"path": "/ws/data/photos", "dvc_md5": "d" * 32 + ".dir", "git_rev": "e" * 40}}


class CountingModel:
    """The champion's pyfunc, with every frame it was asked to predict kept (one entry per call)."""

    def __init__(self, pyfunc) -> None:
        self.pyfunc, self.frames = pyfunc, []

    def predict(self, frame):
        self.frames.append(frame.copy())
        return self.pyfunc.predict(frame)


class FixedOutput:
    """A broken model: returns the same frame whatever it is asked."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame

    def predict(self, frame):
        return self.frame


@pytest.fixture()
def rows(champion_registry):
    return champion_registry.cohort.set_index("patient_id")


def make_scorer(champion, read_features, **kw):
    from serving.scoring import LineageContext, Scorer

    return Scorer(model=champion, read_features=read_features, context=LineageContext(**CONTEXT), **kw)


def expected_results(champion, rows, pids: list[str]) -> list[dict]:
    """What the champion says for these patients' clinical rows, predicted as one batch (the
    batch the scorer should send), in the scorer's result layout. One batch matters: the
    reference model's risk can differ in the last bit between batch shapes, and the cohort's
    own patients sit exactly on a training risk, so their percentile would jump a rank."""
    pred = champion.predict(rows.loc[pids, champion.input_columns].reset_index(drop=True))
    return [{"risk_score": r["risk_score"], "risk_percentile": r["risk_percentile"],
             "survival": [{"days": d, "probability": r[f"survival_{d}d"]} for d in (365, 1095, 1825)]}
            for r in pred.to_dict("records")]


def assert_result(got: dict, want: dict) -> None:
    assert got["risk_score"] == pytest.approx(want["risk_score"], rel=1e-12, abs=1e-12)
    assert got["risk_percentile"] == pytest.approx(want["risk_percentile"], rel=1e-12)
    assert [s["days"] for s in got["survival"]] == [s["days"] for s in want["survival"]]
    assert [s["probability"] for s in got["survival"]] == pytest.approx([s["probability"] for s in want["survival"]],
                                                                          rel=1e-12)


def test_champion_fixture_reads_the_clinical_columns(champion, champion_registry) -> None:
    # the tests below rely on the signature naming the model's inputs (the scorer selects by it)
    assert champion.input_columns == champion_registry.features


def test_a_batch_is_one_read_and_one_model_call_and_each_slot_gets_its_own_prediction(champion, feature_reader,
                                                                                       rows) -> None:
    reads = []

    def reader(ids):
        reads.append(list(ids))
        return feature_reader(ids)

    counting = CountingModel(champion.pyfunc)
    scorer = make_scorer(dataclasses.replace(champion, pyfunc=counting), reader)
    # an unknown patient in the middle: the others must keep their own slots and numbers
    asked = [(KNOWN[2], "alice"), ("nobody-1", "bob"), (KNOWN[0], "carol"), (KNOWN[1], "dave")]
    out = scorer.score_patients(asked)

    assert reads == [[pid for pid, _ in asked]]
    assert len(counting.frames) == 1
    frame = counting.frames[0]
    # only the scorable patients, in request order, with exactly the model's columns
    assert list(frame.columns) == champion.input_columns
    want_frame = rows.loc[[KNOWN[2], KNOWN[0], KNOWN[1]], champion.input_columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), want_frame, check_dtype=False)

    from serving.scoring import UnknownPatient

    assert isinstance(out[1], UnknownPatient)
    assert re.search(r"patient 'nobody-1' has no online features", str(out[1]))
    wants = expected_results(champion, rows, [KNOWN[2], KNOWN[0], KNOWN[1]])
    for slot, want in zip((0, 2, 3), wants, strict=True):
        pid, who = asked[slot]
        rec = out[slot]
        assert isinstance(rec, dict) and rec["patient_id"] == pid and rec["requested_by"] == who
        assert_result(rec["result"], want)
    # the three patients really differ, so a row mix-up could not pass the checks above
    assert len({out[s]["result"]["risk_score"] for s in (0, 2, 3)}) == 3


def test_score_patient_raises_unknown_patient(champion, feature_reader) -> None:
    from serving.scoring import UnknownPatient

    scorer = make_scorer(champion, feature_reader)
    with pytest.raises(UnknownPatient, match=r"^patient 'nobody-1' has no online features; write and materialize"):
        scorer.score_patient("nobody-1", requested_by="tester")


def test_missing_feature_values_name_the_columns_and_all_missing_is_unknown(champion, rows) -> None:
    from ground.errors import DataError
    from serving.scoring import OnlineFeatures, UnknownPatient

    full = {c: float(rows.loc[KNOWN[0], c]) for c in champion.input_columns}
    stored = {
        "part": OnlineFeatures({**full, "pnodes": None, "tsize": None}, {"clinical": "2015-05-27"}, "prognosis_v1"),
        "none": OnlineFeatures(dict.fromkeys(full), {"clinical": "2015-05-27"}, "prognosis_v1"),
        "ok": OnlineFeatures(full, {"clinical": "2015-05-27"}, "prognosis_v1"),
    }
    scorer = make_scorer(champion, lambda ids: [stored[i] for i in ids])
    part, none, ok = scorer.score_patients([("part", "t"), ("none", "t"), ("ok", "t")])
    # a partial row is a data problem, not an unknown patient (the API answers them differently)
    assert type(part) is DataError
    assert str(part) == ("online features of patient 'part' lack pnodes, tsize; materialize the feature service "
                         "again")
    assert isinstance(none, UnknownPatient)
    assert_result(ok["result"], expected_results(champion, rows, [KNOWN[0]])[0])
    with pytest.raises(DataError, match=r"lack pnodes, tsize"):
        scorer.score_patient("part", requested_by="t")


def test_no_feature_store_is_not_available(champion) -> None:
    from ground.errors import NotAvailableError

    with pytest.raises(NotAvailableError, match=r"no online feature store is configured"):
        make_scorer(champion, None).score_patients([(KNOWN[0], "t")])


def test_the_record_carries_the_model_the_context_the_request_and_the_features(champion, feature_reader,
                                                                               rows) -> None:
    from serving.scoring import request_hash

    before = dt.datetime.now(dt.UTC)
    a, b = make_scorer(champion, feature_reader).score_patients([(KNOWN[0], "alice"), (KNOWN[1], "bob")])
    after = dt.datetime.now(dt.UTC)

    assert a["model"] == {"name": champion.name, "version": champion.version, "alias": "champion",
                          "run_id": champion.run_id, "uri": champion.uri,
                          "artifacts_sha256": champion.artifacts_sha256}
    assert champion.run_id and len(champion.artifacts_sha256) == 64  # so the equality above is not None == None
    assert (a["code_version"], a["params_hash"]) == (CONTEXT["code_version"], CONTEXT["params_hash"])
    assert a["request_sha256"] == request_hash({"patient_id": KNOWN[0]}) != b["request_sha256"]
    assert re.fullmatch(r"[0-9a-f]{32}", a["score_id"]) and a["score_id"] != b["score_id"]
    made = dt.datetime.fromisoformat(a["time"])
    assert made.tzinfo is not None and before <= made <= after

    inputs = a["inputs"]
    row = rows.loc[KNOWN[0]]
    assert inputs["kind"] == "online_features" and inputs["feature_service"] == "prognosis_v1"
    assert inputs["feature_event_timestamps"] == {"clinical": row["record_known_at"]}
    assert inputs["feature_values"] == {c: row[c] for c in champion.input_columns}
    # no stored latent behind these features: the lineage slots exist and say "unknown", the DVC
    # version of the photos comes from the server's context
    assert inputs["photo"] == {"sha256": None, "photo_id": None, "dvc": CONTEXT["photo_data"]}
    assert inputs["alignment"] == {"aligner_version": None, "landmark_model_sha256": None}
    assert inputs["generator"] == {"sha256": None, "is_random_init": None, "version": None}
    assert inputs["projection"] == {}


def test_stored_latent_lineage_reaches_the_record_and_the_latent_is_summarised(champion, rows) -> None:
    from serving.scoring import OnlineFeatures, request_hash

    latent = [0.25, -1.5, 3.0]
    lineage = {"photo_sha256": "a" * 64, "photo_id": "ph-1", "aligner_version": "dlib-68/v2",
               "landmark_model_sha256": "b" * 64, "generator_sha256": "c" * 64, "generator_is_random_init": True,
               "generator_version": "facesurv-generator v2", "space": "w", "steps": 50, "mse": 0.012, "perceptual_network": "stlpips",
               "perceptual_is_stand_in": True, "not_projection": "dropped"}
    values = {**{c: float(rows.loc[KNOWN[0], c]) for c in champion.input_columns}, "latent": latent}
    feats = OnlineFeatures(values, {"clinical": "2015-05-27", "latents": "2015-05-26"}, "prognosis_v2", lineage)
    rec = make_scorer(champion, lambda ids: [feats for _ in ids]).score_patient("p-1", requested_by="t")

    inputs = rec["inputs"]
    # the latent is kept as its digest and length, not 512 numbers; the model ignores it (not an input)
    assert inputs["feature_values"]["latent"] == {"sha256": request_hash({"v": latent}), "length": 3}
    assert inputs["feature_values"]["age"] == values["age"]
    assert inputs["feature_service"] == "prognosis_v2"
    assert inputs["feature_event_timestamps"] == {"clinical": "2015-05-27", "latents": "2015-05-26"}
    assert inputs["photo"] == {"sha256": "a" * 64, "photo_id": "ph-1", "dvc": CONTEXT["photo_data"]}
    assert inputs["alignment"] == {"aligner_version": "dlib-68/v2", "landmark_model_sha256": "b" * 64}
    assert inputs["generator"] == {"sha256": "c" * 64, "is_random_init": True, "version": "facesurv-generator v2"}
    assert inputs["projection"] == {"space": "w", "steps": 50, "mse": 0.012, "perceptual_network": "stlpips",
                                    "perceptual_is_stand_in": True}
    assert_result(rec["result"], expected_results(champion, rows, [KNOWN[0]])[0])

    # a latent stored before versions were recorded (no generator_version), or from an unnamed generator
    for stored in ({k: v for k, v in lineage.items() if k != "generator_version"}, {**lineage, "generator_version": None}):
        old = OnlineFeatures(values, {"clinical": "2015-05-27"}, "prognosis_v2", stored)
        rec = make_scorer(champion, lambda ids, f=old: [f for _ in ids]).score_patient("p-1", requested_by="t")
        assert rec["inputs"]["generator"] == {"sha256": "c" * 64, "is_random_init": True, "version": None}


def test_the_record_survives_the_ledger_and_the_response_is_derived_from_it(champion, feature_reader,
                                                                            tmp_path) -> None:
    from serving.ledger import SQLiteLedger
    from serving.scoring import response_from_record

    rec = make_scorer(champion, feature_reader).score_patient(KNOWN[0], requested_by="alice")
    response = response_from_record(rec)
    assert response == {
        "score_id": rec["score_id"], "patient_id": KNOWN[0], "created_at": rec["time"],
        "risk_score": rec["result"]["risk_score"], "risk_percentile": rec["result"]["risk_percentile"],
        "survival": rec["result"]["survival"],
        # the client sees the model's identity, not the artifact store's URI or digest
        "model": {"name": champion.name, "version": champion.version, "alias": "champion", "run_id": champion.run_id},
        "inputs": "online_features",
    }
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    try:
        ledger.append(rec)
        entry = ledger.get(rec["score_id"])
        # JSON round trip through the hash chain: what an audit reads back answers exactly as the API did
        assert entry is not None and entry.record == rec
        assert response_from_record(entry.record) == response
        report = ledger.verify()
        assert report.ok and report.records == 1, report.problems
    finally:
        ledger.close()


def test_request_hash_is_the_sha256_of_the_canonical_payload() -> None:
    from serving.scoring import request_hash

    assert request_hash({"b": 1, "a": "x"}) == hashlib.sha256(b'{"a":"x","b":1}').hexdigest()
    assert request_hash({"a": "x", "b": 1}) == request_hash({"b": 1, "a": "x"})  # key order is not the request
    assert request_hash({"a": "x", "b": 2}) != request_hash({"a": "x", "b": 1})


@dataclasses.dataclass
class FakeEmbedder:
    """Stands in for align + project: records the bytes it was given, returns a fixed latent."""

    lineage: dict
    seen: list = dataclasses.field(default_factory=list)

    def __call__(self, image: bytes):
        from serving.scoring import EmbeddedPhoto

        self.seen.append(image)
        return EmbeddedPhoto(latent=[0.5, -0.5], lineage=self.lineage)


PHOTO_LINEAGE = {"aligner_version": "dlib-68/v2", "landmark_model_sha256": "b" * 64, "generator_sha256": "c" * 64,
                 "generator_is_random_init": False, "generator_version": "facesurv-generator v2",
                 "projection": {"steps": 7, "mse": 0.03}}


def test_score_photo_predicts_from_the_clinical_fields_and_records_the_photo(champion, rows) -> None:
    from serving.scoring import request_hash

    clinical = {**{c: float(rows.loc[KNOWN[1], c]) for c in champion.input_columns}, "sex": "female"}
    embed = FakeEmbedder(PHOTO_LINEAGE)
    scorer = make_scorer(champion, None, embed_photo=embed, projection_settings={"space": "w", "steps": 50})
    image = b"\x89PNG fake bytes"
    rec = scorer.score_photo(image, clinical, patient_id="new-1", requested_by="alice")

    assert embed.seen == [image]
    # a column the model does not take ("sex") is recorded but never reaches the model
    assert_result(rec["result"], expected_results(champion, rows, [KNOWN[1]])[0])
    sha = hashlib.sha256(image).hexdigest()
    assert rec["inputs"] == {
        "kind": "photo_upload", "clinical": clinical,
        "photo": {"sha256": sha, "bytes": len(image), "dvc": None},
        "alignment": {"aligner_version": "dlib-68/v2", "landmark_model_sha256": "b" * 64},
        "generator": {"sha256": "c" * 64, "is_random_init": False, "version": "facesurv-generator v2"},
        # the server's settings, overridden by what this projection actually did
        "projection": {"space": "w", "steps": 7, "mse": 0.03},
    }
    assert rec["request_sha256"] == request_hash({"patient_id": "new-1", "clinical": clinical, "photo_sha256": sha})
    assert (rec["patient_id"], rec["requested_by"], rec["params_hash"]) == ("new-1", "alice", CONTEXT["params_hash"])
    again = scorer.score_photo(image + b"!", clinical, patient_id="new-1", requested_by="alice")
    assert again["request_sha256"] != rec["request_sha256"]  # another photo is another request
    # a generator the registry did not name (a file, the stand-in): a null version
    unnamed = make_scorer(champion, None, embed_photo=FakeEmbedder({**PHOTO_LINEAGE, "generator_version": None}))
    rec = unnamed.score_photo(image, clinical, patient_id="new-1", requested_by="alice")
    assert rec["inputs"]["generator"] == {"sha256": "c" * 64, "is_random_init": False, "version": None}


def test_score_photo_refusals(champion, rows) -> None:
    from ground.errors import DataError, NotAvailableError
    from serving.scoring import PhotoRejected

    clinical = {c: float(rows.loc[KNOWN[1], c]) for c in champion.input_columns}
    with pytest.raises(NotAvailableError, match=r"photo scoring is not available on this server"):
        make_scorer(champion, None).score_photo(b"x", clinical, patient_id="p", requested_by="t")

    counting = CountingModel(champion.pyfunc)
    scorer = make_scorer(dataclasses.replace(champion, pyfunc=counting), None, embed_photo=FakeEmbedder(PHOTO_LINEAGE))
    short = {k: v for k, v in clinical.items() if k not in ("pnodes", "tsize")}
    with pytest.raises(DataError, match=r"^missing clinical field\(s\) pnodes, tsize \(the champion model needs them\)$"):
        scorer.score_photo(b"x", short, patient_id="p", requested_by="t")

    def no_face(image: bytes):
        raise PhotoRejected("no face found in the photo")

    scorer.embed_photo = no_face
    with pytest.raises(PhotoRejected, match=r"^no face found in the photo$"):
        scorer.score_photo(b"x", clinical, patient_id="p", requested_by="t")
    assert counting.frames == []  # nothing was predicted for a refused request


def test_model_output_that_does_not_fit_the_request_is_refused(champion, feature_reader) -> None:
    one_row = pd.DataFrame({"risk_score": [0.1], "risk_percentile": [50.0], "survival_365d": [0.9]})
    broken = make_scorer(dataclasses.replace(champion, pyfunc=FixedOutput(one_row)), feature_reader)
    with pytest.raises(RuntimeError, match=r"^champion model returned 1 rows for 2 inputs$"):
        broken.score_patients([(KNOWN[0], "t"), (KNOWN[1], "t")])

    no_percentile = one_row.drop(columns=["risk_percentile"])
    broken = make_scorer(dataclasses.replace(champion, pyfunc=FixedOutput(no_percentile)), feature_reader)
    with pytest.raises(RuntimeError, match=r"^champion model output lacks column 'risk_percentile'$"):
        broken.score_patient(KNOWN[0], requested_by="t")


def test_survival_horizons_are_read_from_the_column_names_and_sorted(champion, feature_reader) -> None:
    out = pd.DataFrame({"survival_1825d": [0.5], "risk_score": [1.0], "survival_90d": [0.99],
                        "risk_percentile": [75.0], "survival_365d": [0.8], "survival_note": [1.0]})
    rec = make_scorer(dataclasses.replace(champion, pyfunc=FixedOutput(out)), feature_reader).score_patient(
        KNOWN[0], requested_by="t")
    assert rec["result"] == {"risk_score": 1.0, "risk_percentile": 75.0,
                             "survival": [{"days": 90, "probability": 0.99}, {"days": 365, "probability": 0.8},
                                          {"days": 1825, "probability": 0.5}]}


def test_dataframe_feature_reader_answers_in_order_with_none_for_strangers(champion_registry) -> None:
    from serving.scoring import DataFrameFeatureReader

    df = champion_registry.cohort.head(3)
    reader = DataFrameFeatureReader(df, feature_columns=["age", "tsize"], timestamp_column="record_known_at",
                                    feature_service="svc", view="clin")
    got = reader([KNOWN[1], "nobody", KNOWN[0]])
    assert got[1] is None
    for feats, i in ((got[0], 1), (got[2], 0)):
        assert feats.values == {"age": df["age"].iloc[i], "tsize": df["tsize"].iloc[i]}
        assert feats.event_timestamps == {"clin": df["record_known_at"].iloc[i]}
        assert feats.feature_service == "svc" and feats.lineage == {}
    # a timestamp column of datetimes is written as ISO text, as the online store gives it
    stamped = df.assign(record_known_at=pd.to_datetime(df["record_known_at"]))
    feats = DataFrameFeatureReader(stamped, feature_columns=["age"], timestamp_column="record_known_at",
                                   feature_service="svc")([KNOWN[0]])[0]
    assert feats.event_timestamps == {"clinical": "2015-05-27T17:36:37+00:00"}


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
