"""`facesurv demo` on a tiny cohort: every stage runs for real and the report is complete."""

from __future__ import annotations

import hashlib
import html as html_lib
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from facesurv.cli import main

REPO = Path(__file__).resolve().parents[2]
STAGES = ("cohort", "nightly embedding flow", "train and promote flow", "oracle", "evaluation",
          "cnn baselines", "scoring + audit", "grids", "attributes", "report")
CNN = {"cnn_resnet18": "End-to-end CNN: ResNet-18 (from scratch)",
       "cnn_vgg16": "End-to-end CNN: VGG-16 (ImageNet convolutions)"}
# metrics.json key -> (the report's row label, training/'s model name); labels as a reader sees them
FROZEN = {"embedding_deepsurv": ("Embeddings, DeepSurv", "deepsurv_latent"),
          "embedding_coxph": ("Embeddings, CoxPH (Coxnet)", "coxnet_latent"),
          "clinical_coxph": ("Clinical, CoxPH", "coxph_clinical"),
          "clinical_deepsurv": ("Clinical, DeepSurv", "deepsurv_clinical"),
          "fusion": ("Combined (late fusion)", "fusion")}
ORACLE = {"oracle_embedding": "Oracle: true latents, CoxPH", "oracle_fusion": "Oracle: true latents + clinical"}
CEILING = {"face": "Ceiling: true face log-hazard", "clinical": "Ceiling: true clinical log-hazard",
           "total": "Ceiling: true total log-hazard"}
DERIVED = {"retention": "Retention (", "retention_face": "Face-only retention", "fusion_gain": "Fusion gain",
           "ceiling_gain": "The ceiling's gain"}
# metrics.json keeps 4 decimals, the report shows 3 (2 for retentions) of the unrounded value
SHOWN3, SHOWN2 = 5e-4 + 5e-5 + 1e-9, 5e-3 + 5e-5 + 1e-9


@pytest.mark.slow
def test_demo_runs_every_stage_and_writes_the_report(tmp_path: Path, capsys) -> None:
    """A rendered cohort on a fixed seed. The signal is made strong and easy (s = 3 along the
    generator's most visible direction, a 16 px generator) so that a 200-patient cohort with a
    short projection still carries it: the science assertions below must hold, not merely run
    (at s = 2, 120 patients and 30 steps the embedding's CI was 0.465-0.622)."""
    out = tmp_path / "demo"
    out.mkdir()
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    # small enough for a test: few projection steps and bootstrap draws, short DeepSurv training
    raw["projection"]["steps"] = 50
    raw["evaluation"]["bootstrap"] = 100
    raw["training"]["deepsurv_epochs"] = 20
    raw["generator"].update({"resolution": 16, "channel_max": 16})
    raw["synth"].update({"strength": 3.0, "direction": "visible", "direction_samples": 16})
    raw["cnn"].update({"image_size": 32, "epochs": 3, "vgg16_trainable_blocks": 1})
    raw["attributes"].update({"loop_patients": 4, "bootstrap": 50, "age_shuffles": 5})
    (out / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    rc = main(["demo", "--out", str(out), "--patients", "200", "--seed", "1", "--rendered"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err[-3000:] + printed.out[-3000:]
    try:
        check_demo_workspace(out, printed.out, printed.err, capsys)
    finally:
        shutil.rmtree(out / ".prefect", ignore_errors=True)


def check_demo_workspace(out: Path, stdout: str, stderr: str, capsys) -> None:
    """Everything the finished demo left in `out`, held against what it printed and against
    each other: a report number that is not the run's number, or a score that is not the
    ledger's, fails here."""
    assert stderr.splitlines()[0] == "cohort: rendered faces (--rendered)"  # the first line a user sees
    # the nightly flow is not silent: its phases and the projection's progress reach the terminal
    assert re.search(r"^projecting a batch of \d+ photos: 50/50 steps \(100%\) in \d+", stderr, re.M), stderr[-2000:]
    assert re.search(r"^alignment: done in \d+\.\d s$", stderr, re.M) and "[nightly embedding flow] started" in stderr
    summary = dict(re.findall(r"^  (\S.*?)\s+(done|failed|skipped|not available)\s+[\d.]+s$", stdout, re.M))
    assert summary == dict.fromkeys(STAGES, "done"), stdout
    printed_s = {m[0]: float(m[1]) for m in re.findall(r"^  (\S.*?)\s+done\s+([\d.]+)s$", stdout, re.M)}

    report = out / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    md = (report / "report.md").read_text()
    page = (report / "index.html").read_text()
    outcome = (out / "cohort" / "truth" / "outcome.csv").read_text().splitlines()
    truth = json.loads((out / "cohort" / "truth" / "summary.json").read_text())
    events = sum(int(line.rsplit(",", 1)[1]) for line in outcome[1:])

    # --- the cohort: what the cohort stage drew is what the report describes ---
    assert (metrics["base"], metrics["patients"], metrics["seed"]) == ("gbsg2", 200, 1)
    assert metrics["cohort"] == {"kind": "rendered", "survival_seed": 1,
                                 "rung": "rendered, the generator's most visible direction in w (the easy case)"}
    assert (truth["patients"], truth["events"]) == (200, events) and len(outcome) == 201
    assert re.search(rf"^\[cohort\] done .* 200 patients \(gbsg2\), {events} drawn events", stderr, re.M)
    assert md.startswith("# facesurv demo report — gbsg2, 200 patients, seed 1\n")

    # --- frozen split: the report's models are the train-and-promote flow's, under the right names ---
    trained = json.loads((out / "artifacts" / "training" / "metrics.json").read_text())["models"]
    test_ids = json.loads((out / "artifacts" / "splits" / "test_split.json").read_text())["test_patient_ids"]
    for key, (_, name) in FROZEN.items():
        got, want = metrics["models"][key], trained[name]
        assert got["c_index"] == round(want["c_index"], 4), key
        assert got["c_index_ci"] == [round(want["c_index_lo"], 4), round(want["c_index_hi"], 4)], key
        assert got["ibs"] == round(want["ibs"], 4), key
    for key in (*FROZEN, *ORACLE):
        lo, hi = metrics["models"][key]["c_index_ci"]
        assert lo <= metrics["models"][key]["c_index"] <= hi, (key, metrics["models"][key])
    # the oracle is scored on the same frozen test split as the registered models
    for key in ORACLE:
        assert (metrics["models"][key]["n_test"], metrics["models"][key]["n_train"]) == (len(test_ids),
                                                                                         200 - len(test_ids)), key
    emb, oracle = metrics["models"]["embedding_coxph"]["c_index"], metrics["models"]["oracle_embedding"]["c_index"]
    assert metrics["retention_vs_oracle"] == pytest.approx((emb - 0.5) / (oracle - 0.5),
                                                           abs=ratio_tol(emb - 0.5, oracle - 0.5, 5e-5))

    # --- cross-fitted evaluation: every patient, the drawn events, the ceilings of the drawn truth ---
    cf = metrics["crossfit"]
    params = yaml.safe_load((out / "params.yaml").read_text())
    assert (cf["folds"], cf["patients"], cf["events"], cf["bootstrap"]) == (params["synth"]["folds"], 200, events, 100)
    assert set(cf["models"]) == set(FROZEN)
    for k in CEILING:  # the ceiling is the truth's own C-index: no model in between
        assert metrics["ceiling"][k]["value"] == pytest.approx(truth["ceiling_c_index"][k], abs=1.01e-4), k
    stats = {**{f"crossfit {k}": v["c_index"] for k, v in cf["models"].items()},
             **{f"crossfit {k} ibs": v["ibs"] for k, v in cf["models"].items()},
             **{f"ceiling {k}": v for k, v in metrics["ceiling"].items()}, **{k: metrics[k] for k in DERIVED}}
    for what, stat in stats.items():
        lo, hi = stat["ci"]
        assert None not in (lo, hi, stat["value"]) and lo <= stat["value"] <= hi, (what, stat)
    c = {k: v["c_index"]["value"] for k, v in cf["models"].items()}
    ceil = {k: v["value"] for k, v in metrics["ceiling"].items()}
    gain, ceiling_gain = c["fusion"] - c["clinical_coxph"], ceil["total"] - ceil["clinical"]
    assert metrics["fusion_gain"]["value"] == pytest.approx(gain, abs=1.6e-4)
    assert metrics["ceiling_gain"]["value"] == pytest.approx(ceiling_gain, abs=1.6e-4)
    assert metrics["retention"]["value"] == pytest.approx(gain / ceiling_gain, abs=ratio_tol(gain, ceiling_gain, 1e-4))
    face_num, face_den = c["embedding_coxph"] - 0.5, ceil["face"] - 0.5
    assert metrics["retention_face"]["value"] == pytest.approx(face_num / face_den,
                                                               abs=ratio_tol(face_num, face_den, 5e-5))

    # --- the science: the embedding finds the planted signal, and fusing it in does not hurt ---
    lo, _ = cf["models"]["embedding_coxph"]["c_index"]["ci"]
    assert lo > 0.5, cf["models"]["embedding_coxph"]
    fusion, clinical = cf["models"]["fusion"]["c_index"], cf["models"]["clinical_coxph"]["c_index"]
    assert metrics["fusion_gain"]["ci"][1] >= 0, (fusion, clinical)
    assert fusion["value"] >= clinical["ci"][0]

    # --- timings: the run's own, as the stage summary printed them ---
    ran = [s for s in STAGES if s != "report"]  # the report is written inside its own stage
    assert list(metrics["stages_s"]) == ran
    for stage in ran:
        assert metrics["stages_s"][stage] == pytest.approx(printed_s[stage], abs=0.06), stage
    assert metrics["total_s"] == pytest.approx(sum(metrics["stages_s"].values()), abs=0.01 * len(ran))
    nightly_parts = metrics["stage_parts_s"]["nightly embedding flow"]
    assert {"alignment", "projection", "Feast writes"} <= set(nightly_parts)
    assert sum(nightly_parts.values()) <= metrics["stages_s"]["nightly embedding flow"]
    assert metrics["generator_is_random_init"] is True

    # --- the report pages show metrics.json's numbers, the same in both formats ---
    md_cross, md_frozen = md_table(md, "## Table 1, cross-fitted"), md_table(md, "## Table 1, frozen split")
    assert html_table(page, "<h2>Table 1, cross-fitted") == md_cross
    assert html_table(page, "<h2>Table 1, frozen split") == md_frozen
    for key, (label, _) in FROZEN.items():
        assert_shown(md_cross[label][0], cf["models"][key]["c_index"]["value"], cf["models"][key]["c_index"]["ci"])
        assert_shown(md_cross[label][1], cf["models"][key]["ibs"]["value"], cf["models"][key]["ibs"]["ci"])
        assert_shown(md_frozen[label][0], metrics["models"][key]["c_index"], metrics["models"][key]["c_index_ci"])
    for key, label in CEILING.items():
        assert_shown(md_cross[label][0], metrics["ceiling"][key]["value"], metrics["ceiling"][key]["ci"])
    for key, label in ORACLE.items():
        assert_shown(md_frozen[label][0], metrics["models"][key]["c_index"], metrics["models"][key]["c_index_ci"])
    derived_lines = dict(re.findall(r"^- \*\*(.+?)\*\*: (.+)$", md, re.M))
    for key, start in DERIVED.items():
        (shown,) = [text for label, text in derived_lines.items() if label.startswith(start)]
        assert_shown(shown, metrics[key]["value"], metrics[key]["ci"], tol=SHOWN2 if "retention" in key else SHOWN3)
    (oracle_shown,) = re.findall(r"^\*\*Oracle retention\*\* .*: (-?\d+\.\d+)$", md, re.M)
    assert float(oracle_shown) == pytest.approx(metrics["retention_vs_oracle"], abs=SHOWN2)

    # --- the CNN baselines: the same frozen test patients, registered, rows of Table 1 with Brier columns ---
    cnn = json.loads((out / "artifacts" / "training" / "cnn_metrics.json").read_text())["models"]
    horizons = params["training"]["horizons_days"]
    header = next(line for line in md.split("## Table 1, frozen split", 1)[1].splitlines() if line.startswith("| model"))
    assert header == "| " + " | ".join(["model", "C-index", "IBS", *[f"Brier {h} d" for h in horizons],
                                          "paper C-index", "paper Brier"]) + " |"
    for key, label in CNN.items():
        got = metrics["models"][key]
        assert got["c_index"] == round(cnn[key]["c_index"], 4) and got["n_test"] == len(test_ids), key
        assert got["c_index_ci"][0] <= got["c_index"] <= got["c_index_ci"][1], key
        assert cnn[key]["registered_name"].endswith(key.replace("_", "-")) and int(cnn[key]["version"]) >= 1
        assert_shown(md_frozen[label][0], got["c_index"], got["c_index_ci"])
        brier = [k for k in got if k.startswith("brier_") and not k.endswith("_ci")]
        assert sorted(brier) == sorted(f"brier_{h}d" for h in horizons), key

    # --- attributes: subgroups with CIs or a reason, the health loop, the age direction and its control ---
    rows = metrics["subgroups"]["rows"]
    assert {r["grouping"] for r in rows} >= {"age band", "cancer type"}
    for r in rows:
        if r["events"] < 10:
            assert r["c_index"] is None and "fewer than 10 events" in r["reason"], r
        elif r["c_index"] is not None and r["c_index"]["ci"][0] is not None:
            assert r["c_index"]["ci"][0] <= r["c_index"]["value"] <= r["c_index"]["ci"][1], r
    health = metrics["health_attribute"]
    rho = health["edit_loop"]["rho"]
    assert rho["ci"][0] <= rho["value"] <= rho["ci"][1] and rho["value"] > 0.5, rho   # edits move the risk
    cos = health["cosine_with_true_direction"]
    assert cos["ci"][0] <= cos["value"] <= cos["ci"][1] and cos["value"] > 0.2, cos   # it finds the planted face
    age = metrics["age_attribute"]
    assert age["r2"]["ci"][0] <= age["r2"]["value"] <= age["r2"]["ci"][1]
    assert len(age["shuffled"]["r2s"]) == 5 and age["learned_from"].startswith("the clinical age")
    assert "Health and age attributes, measured" in md and "Subgroups (the paper's Fig. 3)" in md

    # --- figures: the pages show the same images, every one a real PNG, the grids among them ---
    images = re.findall(r"<img src='([^']+)'", page)
    assert images == re.findall(r"^!\[[^\]]*\]\(([^)]+)\)$", md, re.M)
    assert {"figures/pairs.png", "figures/astronaut_alignment.png", "figures/edit_health.png",
            "figures/edit_age.png"} <= set(images) and len(images) >= 6
    from PIL import Image

    for src in images:
        with Image.open(report / src) as im:
            assert im.format == "PNG" and min(im.size) >= 16, src
    # the generator is a stand-in; no perceptual network runs under the demo's pixel loss, and the
    # report says so as the ledger's projection record does (perceptual_network "none")
    assert "random-init stand-in" in page and "none used: the projection loss is pixel MSE" in page

    # --- the scored patient: the ledger holds what the API answered, with its lineage ---
    check_scored_patient(out, stderr, capsys)
    check_edit_command(out, metrics["health_attribute"]["edit_loop"]["patient_ids"][0], capsys)


def check_edit_command(out: Path, patient: str, capsys) -> None:
    """`facesurv edit` on the demo's workspace: a grid per attribute, logged to MLflow; bad input, one line."""
    from mlflow import MlflowClient

    from ground.workspace import Workspace
    from training.tracking import tracking_uri_for

    capsys.readouterr()
    png = out / "edit-age.png"
    assert main(["edit", "--patient-id", patient, "--attribute", "age", "--betas", "-2", "--betas", "0",
                 "--betas", "2", "--out", str(png), "--workspace", str(out)]) == 0
    printed = capsys.readouterr().out
    run_id = re.search(r"MLflow run ([0-9a-f]{32})", printed)[1]
    assert re.search(r"re-scored log-risk by beta: -2: [-+]\d+\.\d{3}, \+0: [-+]\d+\.\d{3}, \+2: [-+]\d+\.\d{3}\n",
                     printed), printed
    assert re.search(r"age direction held-out R2 -?\d\.\d{3} \[-?\d\.\d{3}, -?\d\.\d{3}\]; shuffled ages -?\d\.\d{3}",
                     printed), printed
    from PIL import Image

    with Image.open(png) as im:
        assert im.format == "PNG" and im.height > 3 * 32
    ws = Workspace(out)
    client = MlflowClient(tracking_uri=tracking_uri_for(ws.load_params(), ws.mlflow_dir))
    run = client.get_run(run_id)
    assert run.data.tags["attribute"] == "age" and run.data.tags["patient_id"] == patient
    assert {a.path for a in client.list_artifacts(run_id, "grids")} == {"grids/edit-age.png"}
    for args, match in ((["--attribute", "beauty"], "unknown attribute 'beauty'; choose health or age"),
                        (["--patient-id", "nobody"], "patient 'nobody' has no latent in the training set"),
                        (["--betas", "1", "--betas", "0"], "--betas must be at least 2 finite increasing")):
        base = {"--patient-id": patient, "--attribute": "health"}
        argv = ["edit", *[x for k, v in base.items() if k not in args for x in (k, v)], *args, "--workspace", str(out)]
        assert main(argv) != 0
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and match in err, err


def check_scored_patient(out: Path, stderr: str, capsys) -> None:
    from ground.workspace import Workspace

    (line,) = re.findall(r"^POST /v1/scores .*$", stderr, re.M)
    m = re.fullmatch(r"POST /v1/scores (\S+): risk (-?\d+\.\d{3}) \(percentile (\d+)\), survival (.+), "
                     r"score_id ([0-9a-f]{32})", line)
    assert m, line
    patient, risk, pct, survival, score_id = m.groups()
    clinical_csv = (out / "cohort" / "clinical.csv").read_text().splitlines()
    header = clinical_csv[0].split(",")
    row = dict(zip(header, clinical_csv[1].split(","), strict=True))
    assert patient == row["patient_id"]  # the demo scores the cohort's first patient

    capsys.readouterr()
    assert main(["audit", score_id, "--json", "--workspace", str(out)]) == 0
    entry = json.loads(capsys.readouterr().out)
    assert entry["ledger_ok"] is True and entry["ledger_problems"] == []
    assert (entry["seq"], entry["score_id"], entry["prev_hash"]) == (1, score_id, "0" * 64)
    rec = entry["record"]
    # the ledger's numbers are the ones the API answered (and the demo printed)
    assert (rec["patient_id"], f"{rec['result']['risk_score']:.3f}", f"{rec['result']['risk_percentile']:.0f}") == (
        patient, risk, pct)
    assert ", ".join(f"{s['days']}d {s['probability']:.2f}" for s in rec["result"]["survival"]) == survival

    # lineage: the promoted model, the workspace's params, the patient's own photo and record
    training = json.loads((out / "artifacts" / "training" / "metrics.json").read_text())
    split = json.loads((out / "artifacts" / "splits" / "test_split.json").read_text())["data_versions"]
    cohort = json.loads((out / "cohort" / "cohort.json").read_text())
    name = rec["model"]["name"]
    assert rec["model"]["alias"] == "champion" and rec["model"]["uri"] == f"models:/{name}@champion"
    assert rec["model"]["version"] == training["model_versions"][name]
    assert rec["model"]["artifacts_sha256"] == training["model_artifacts_sha256"][name]
    assert rec["params_hash"] == Workspace(out).load_params().params_hash == split["params_hash"]
    inputs = rec["inputs"]
    assert inputs["kind"] == "online_features"
    assert inputs["feature_event_timestamps"] == {"clinical": row["record_known_at"],
                                                  "face_latent": row["photo_taken_at"]}
    for col in ("age", "estrec", "pnodes", "progrec", "tsize"):
        assert inputs["feature_values"][col] == float(row[col]), col
    for col in ("sex", "cancer_type", "hor_th", "menostat", "tgrade"):
        assert inputs["feature_values"][col] == row[col], col
    assert inputs["feature_values"]["latent"]["length"] == 512
    photo = out / "cohort" / "photos" / f"{row['photo_id']}.png"
    assert inputs["photo"]["photo_id"] == row["photo_id"]
    assert inputs["photo"]["sha256"] == hashlib.sha256(photo.read_bytes()).hexdigest()
    # the photos' data version is the one the model was trained on
    assert inputs["photo"]["dvc"]["dvc_md5"] == split["md5.photos"]
    assert inputs["photo"]["dvc"]["git_rev"] == split["rev"]
    assert inputs["generator"] == {"sha256": cohort["generator"]["sha256"], "is_random_init": True, "version": None}
    assert inputs["alignment"]["aligner_version"] == "prealigned"  # rendered portraits skip alignment
    assert (inputs["projection"]["space"], inputs["projection"]["steps"]) == ("w", 50)

    # the workspace stays usable: its ledger verifies from the CLI
    assert main(["audit", "verify", "--workspace", str(out)]) == 0


def md_table(md: str, heading: str) -> dict[str, list[str]]:
    """{row label: [cells after the label]} of the first table after `heading` in report.md."""
    section = md.split(heading, 1)[1].split("\n\n", 2)[1]
    rows = [line.strip("|").split(" | ") for line in section.splitlines()[2:]]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows}


def html_table(page: str, heading: str) -> dict[str, list[str]]:
    """The same for the first table after `heading` in index.html."""
    section = page.split(heading, 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>((?:<td>.*?</td>)+)</tr>", section)
    cells = [[html_lib.unescape(c) for c in re.findall(r"<td>(.*?)</td>", r)] for r in rows]
    return {r[0]: r[1:] for r in cells}


def ratio_tol(num: float, den: float, err: float) -> float:
    """How far num / den may be from the unrounded ratio when num and den are each off by up to
    err (metrics.json's rounding to 4 decimals), plus the ratio's own rounding."""
    return err * (1 + abs(num / den)) / abs(den) + 5e-5 + 1e-9


def assert_shown(text: str, value: float, ci: list[float], *, tol: float = SHOWN3) -> None:
    """A report cell 'v [lo, hi]' shows this value and CI, to the digits it prints."""
    m = re.fullmatch(r"(-?\d+\.\d+) \[(-?\d+\.\d+), (-?\d+\.\d+)\]", text)
    assert m, text
    assert [float(x) for x in m.groups()] == pytest.approx([value, *ci], abs=tol), (text, value, ci)


def test_demo_chooses_real_faces_only_where_a_face_folder_exists(tmp_path: Path, params) -> None:
    from demo.runner import choose_faces
    from ground.config import with_overrides
    from ground.workspace import Workspace

    ws = Workspace(tmp_path)
    faces = tmp_path / "faces"
    faces.mkdir()
    found, line = choose_faces(ws, with_overrides(params, demo={"faces": "faces"}), rendered=False)
    assert found == faces.resolve() and line.startswith("cohort: REAL FACES from")
    assert choose_faces(ws, with_overrides(params, demo={"faces": "faces"}), rendered=True)[0] is None
    found, line = choose_faces(ws, with_overrides(params, demo={"faces": "no/such/folder"}), rendered=False)
    assert found is None and "no labelled face folder at demo.faces = 'no/such/folder'" in line
