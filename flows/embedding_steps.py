"""Alignment and projection of the workspace's photos, through the one driver of each.

Alignment runs embedding.align.align_directory on data/photos into artifacts/aligned (the
command `facesurv align` runs): a photo is redone when its bytes, the aligner or its options
changed, and a killed run keeps every photo of the manifest's last checkpoint.

Projection runs embedding.project_batch (as `facesurv project` does) on the aligned photos and
data/prealigned, planned in the flow and projected one batch per task:

    artifacts/latents/shard-<run key16>-<batch16>.npz

The run key hashes the generator, the perceptual network (when the loss uses one) and every
projection setting. A photo is pending while no shard of the current key holds its hash, so a
finished batch is never recomputed and a photo is never projected twice. An aligned photo's hash
is its source photo's, as photo scoring keys it, so both give it the same latent.

Most nights bring nothing to align or project, and such a night loads no model: alignment loads
dlib's models only when a photo must be aligned (the reuse check needs the model files' hashes,
not the models), and `projection_todo` plans against the run key an earlier run remembered
(artifacts/flows/projection-run-key.json) when nothing it is computed from changed since: the
params file, the generator checkpoint's files (size, mtime, inode) or registry version, the
embedding code and the torch and numpy versions. The generator is loaded only when a photo is
pending under that key, or when the key cannot be told without loading a model (a loss with a
perceptual network, an encoder start), and its run key is remembered again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, cast

from embedding.project_batch import PhotoFailure, PhotoInput, Plan, Projection, plan, shard_paths
from facesurv.components import components
from flows.faults import checkpoint
from flows.progress import Progress
from flows.steps import Layout, read_valid_clinical
from ground.atomic import atomic_path
from ground.config import Params
from ground.workspace import REPO_ROOT, Workspace

PREALIGNED_VERSION = "prealigned"
RUN_KEY_MEMO = "projection-run-key.json"  # in artifacts/flows/
# the code a run key's generator and settings go through (hashed: an edit forgets the remembered key)
KEY_CODE = ("embedding/*.py", "embedding/stylegan2/*.py", "facesurv/components.py", "ground/config.py")


def align_photos(ws: Workspace, params: Params) -> Any:
    """Align data/photos into artifacts/aligned (embedding.align.BatchResult; None: no photo yet)."""
    from embedding.align import align_directory

    photos = ws.data_dir / "photos"
    if not photos.is_dir():
        return None
    aligner = _AlignerOnDemand(components(ws, params))
    total = sum(1 for e in os.scandir(photos) if not e.name.startswith("."))
    with Progress("aligning photos", total, unit="photos") as bar:
        return align_directory(photos, Layout(ws).aligned, config=aligner.config, aligner=aligner,  # type: ignore[arg-type]
                               progress=lambda row: bar.advance(),
                               on_written=lambda row: checkpoint("align:photo-written"))


class _AlignerOnDemand:
    """The process's aligner (facesurv.components), loaded on first use. align_directory needs only
    its config and verified model files to tell which photos it reuses, and aligns in this process
    with it only when there is a photo to align, so a night with every photo aligned already does
    not load dlib's models (1-2 s); a worker pool loads its own, as before."""

    def __init__(self, parts: Any) -> None:
        from embedding.align import AlignConfig, ModelSet

        self._parts = parts
        self.config = AlignConfig.from_object(parts.params.align)
        self.models = ModelSet.resolve(self.config)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parts.aligner, name)


def read_manifest(ws: Workspace) -> Any:
    import pandas as pd

    path = Layout(ws).aligned / "manifest.csv"
    return pd.read_csv(path) if path.is_file() and path.stat().st_size else None


def projection_inputs(ws: Workspace) -> list[PhotoInput]:
    """Every photo to project: the aligned ones, then the declared pre-aligned ones (by photo_id,
    an aligned photo wins). Only plain files are read: the driver fails a link, unread."""
    from embedding.align import read_manifest as manifest_rows

    aligned = Layout(ws).aligned
    items = {pid: PhotoInput(pid, str(aligned / r["output_file"]), root=str(aligned), sha256=r["source_sha256"])
             for pid, r in manifest_rows(aligned / "manifest.csv").items() if r["status"] == "aligned"}
    pre = ws.data_dir / "prealigned"
    names = sorted(e.name for e in os.scandir(pre) if not e.name.startswith(".")
                   and not e.is_dir(follow_symlinks=False)) if pre.is_dir() else []
    for name in names:
        items.setdefault(Path(name).stem, PhotoInput(Path(name).stem, str(pre / name), root=str(pre)))
    return list(items.values())


def _project_then_checkpoint(*args: Any, **kwargs: Any) -> Any:
    from embedding.projection import project

    result = project(*args, **kwargs)
    checkpoint("project:batch-computed")  # the crash test kills here: computed, not yet written
    return result


def projection(ws: Workspace, params: Params, *, projecting: bool = False) -> Projection:
    """params' projection on projection.device as this process sees it (auto: CUDA when it has one);
    the models and the latent statistics are loaded once per process."""
    return components(ws, params).projection(with_stats=projecting, project_fn=_project_then_checkpoint)  # type: ignore[no-any-return]


def pending_batches(ws: Workspace, params: Params) -> Plan:
    """The photos with no latent for this run key, in batches (and those that cannot be read); the
    generator's encoder is trained first when projection.init is encoder and it has none yet."""
    if params.projection.init == "encoder":
        from flows.encoder_steps import ensure_encoder

        ensure_encoder(ws, params, log=print)
    return plan(projection(ws, params), projection_inputs(ws), shard_dir=Layout(ws).latents,
                batch_size=components(ws, params).projection_batch_size(), warn=print)


def generator_label(info: Any) -> str:
    """How the flow names a generator to the operator: its registry version, else kind and sha256."""
    return str(info.version or f"{'random-init stand-in' if info.is_random_init else 'generator'} {info.sha256[:12]}")


@dataclass(frozen=True)
class ProjectionTodo:
    """pending_batches' plan with its run key and generator label. loaded: whether the models
    were loaded to make it (False: planned against a remembered run key)."""

    plan: Plan
    key: str
    generator: str
    loaded: bool
    encoder: dict[str, Any] | None = None  # flows.encoder_steps.ensure_encoder's result (init: encoder)


@dataclass(frozen=True)
class _KnownKey:
    """A run key standing in for its Projection where only the key is read (plan, shard_paths)."""

    key: str


def projection_todo(ws: Workspace, params: Params) -> ProjectionTodo:
    """pending_batches for the nightly flow: without loading any model when an earlier run with
    the same key identity (see the module doc) remembered the run key and no photo is pending under
    it; otherwise the models are loaded, the plan made with their key, and that key remembered."""
    identity = run_key_identity(ws, params)
    memo = _recall(ws, identity)
    photos = projection_inputs(ws)
    if memo is not None:
        todo = plan(cast(Projection, _KnownKey(memo["key"])), photos, shard_dir=Layout(ws).latents,
                    batch_size=params.projection.batch_size, warn=print)
        if not todo.batches:
            return ProjectionTodo(todo, memo["key"], memo["generator"], loaded=False)
    encoder = None
    if params.projection.init == "encoder":  # its sha256 is in the run key: trained (once) before planning
        from flows.encoder_steps import ensure_encoder

        encoder = {k: v for k, v in ensure_encoder(ws, params, log=print).items() if k != "metrics"}
    proj = projection(ws, params)
    label = generator_label(proj.generator_info)
    if identity is not None:
        _remember(ws, {"identity": identity, "key": proj.key, "generator": label})
    # batches as this machine runs them (on CUDA: what fits its free memory)
    todo = plan(proj, photos, shard_dir=Layout(ws).latents, batch_size=components(ws, params).projection_batch_size(),
                warn=print)
    return ProjectionTodo(todo, proj.key, label, loaded=True, encoder=encoder)


def run_key_identity(ws: Workspace, params: Params) -> str | None:
    """sha256 of what the projection run key is computed from, told without loading a model; None
    where it cannot be (a loss with a perceptual network, whose weights may come from the
    environment; an encoder start; a checkpoint that is not there, whose error the load reports)."""
    if "perceptual" in params.projection.loss or getattr(params.projection, "init", "mean") != "mean":
        return None
    checkpoint_setting = params.generator.checkpoint
    source: Any = None
    if checkpoint_setting is not None:
        from training.generator_registry import is_registry_uri

        if is_registry_uri(checkpoint_setting):
            registered = components(ws, params).registered_generator()
            source = {"registered": registered.label, "sha256": registered.sha256}
        else:
            path = ws.setting_path(checkpoint_setting)
            source = _files_stamp(path) if path is not None else None
            if source is None:
                return None
    blob = {"params": params.params_hash, "generator": source, "code": code_digest(KEY_CODE, ("torch", "numpy"))}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()


def code_digest(patterns: tuple[str, ...], distributions: tuple[str, ...] = ()) -> str:
    """sha256 of the source files matching `patterns` (under the code checkout) and of the installed
    versions of `distributions`: what a remembered result was computed with."""
    h = hashlib.sha256()
    for pattern in patterns:
        for f in sorted(REPO_ROOT.glob(pattern)):
            h.update(f.relative_to(REPO_ROOT).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    for dist in distributions:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            version = "absent"
        h.update(f"{dist}=={version}\0".encode())
    return h.hexdigest()


def _files_stamp(path: Path) -> list[list[Any]] | None:
    """(name, size, mtime_ns, inode) of a file, or of every file under a folder; None when absent.
    A file replaced by other bytes changes at least one of them."""
    if path.is_file():
        files = [(path.name, path)]
    elif path.is_dir():
        files = [(p.relative_to(path).as_posix(), p) for p in sorted(path.rglob("*")) if p.is_file()]
    else:
        return None
    stamp = []
    for name, p in files:
        st = p.stat()
        stamp.append([name, st.st_size, st.st_mtime_ns, st.st_ino])
    return stamp


def _memo_path(ws: Workspace) -> Path:
    return Layout(ws).inbox_state.parent / RUN_KEY_MEMO


def _recall(ws: Workspace, identity: str | None) -> dict[str, str] | None:
    if identity is None:
        return None
    try:
        memo = json.loads(_memo_path(ws).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(memo, dict) or memo.get("identity") != identity:
        return None
    if not isinstance(memo.get("key"), str) or not isinstance(memo.get("generator"), str):
        return None
    return {"key": memo["key"], "generator": memo["generator"]}


def _remember(ws: Workspace, memo: dict[str, str]) -> None:
    path = _memo_path(ws)
    try:
        if json.loads(path.read_text(encoding="utf-8")) == memo:
            return
    except (OSError, ValueError):
        pass
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(memo, indent=1, sort_keys=True), encoding="utf-8")


def project_batch(ws: Workspace, params: Params, batch: list[PhotoInput]) -> tuple[Path | None, list[PhotoFailure]]:
    """Project one planned batch into its shard, on whichever worker runs it."""
    from embedding.project_batch import project_batch as project

    engine = projection(ws, params, projecting=True)
    steps = int(params.projection.steps)
    with Progress(f"projecting a batch of {len(batch)} photos", steps, unit="steps") as bar:
        return project(engine, batch, shard_dir=Layout(ws).latents,
                       progress=lambda step, total: bar.update(step) if steps else None)


def latent_shards(ws: Workspace, params: Params, *, key: str | None = None) -> list[Path]:
    """The shards of the run key (`key`: one projection_todo found; else the loaded models')."""
    return shard_paths(Layout(ws).latents, key or projection(ws, params).key)


def write_latent_features(ws: Workspace, params: Params, valid_clinical: list[Path], valid_latents: list[Path], *,
                          openlineage: dict[str, Any] | None = None) -> int:
    """face_latent rows for every valid latent with a clinical record (the rest wait for one).

    openlineage: the writing flow run's {"run_id", "namespace"} (RunRecord.openlineage), stored with
    each new row (openlineage_run_id, openlineage_namespace); a row stored already keeps the run
    that first wrote it, since writing the same row again adds nothing.
    """
    import pandas as pd

    from features.contracts import newest_first
    from features.store import join_latents, write_latents

    if not valid_latents or not valid_clinical:
        return 0
    latents = pd.concat([pd.read_parquet(p) for p in valid_latents], ignore_index=True)
    # a correction (a later record_known_at) must be the clinical row a latent is joined through
    rows, _unmatched = join_latents(latents, newest_first(read_valid_clinical(valid_clinical)),
                                    manifest=read_manifest(ws), aligner_version=PREALIGNED_VERSION)
    if openlineage:
        rows = rows.assign(openlineage_run_id=openlineage.get("run_id"),
                           openlineage_namespace=openlineage.get("namespace"))
    return int(write_latents(ws.feature_repo_dir, rows, params)) if len(rows) else 0


def latent_generator(valid_latents: list[Path]) -> dict[str, Any] | None:
    """The generator the latents were projected with ({version, sha256, is_random_init}), read from
    the newest valid latent file; None when there is none. One run key means one generator."""
    import pyarrow.parquet as pq

    if not valid_latents:
        return None
    path = valid_latents[-1]
    names = set(pq.read_schema(path).names)
    wanted = [c for c in ("generator_version", "generator_sha256", "generator_is_random_init") if c in names]
    table = pq.read_table(path, columns=wanted)
    if table.num_rows == 0:
        return None
    first = {c: table.column(c)[0].as_py() for c in wanted}
    return {"version": first.get("generator_version"), "sha256": first.get("generator_sha256"),
            "is_random_init": first.get("generator_is_random_init")}
