"""The composition root: (workspace, params) -> the loaded components every entry point uses.

The CLI, the flows (on each worker), the demo, photo scoring and the benchmarks all ask this
module for the generator, the perceptual network, the aligner, the latent statistics, the
device, the MLflow tracking URI, the feature repository and the scoring server, so each is
built one way: a relative path in params.yaml is taken under the workspace, a bad checkpoint
or device is a one-line error, and what is slow to load is loaded once per process.

It sits between the libraries and the pipelines: it imports ground and the libraries (inside
functions, so importing it is cheap) and nothing above it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ground.config import Params
from ground.errors import ConfigError, DataError, NotAvailableError
from ground.workspace import Workspace, code_version


@dataclass(eq=False)
class Components:
    """Loaded on first use and kept. `ws` None: paths in params are taken as given (a cohort
    built outside any workspace)."""

    ws: Workspace | None
    params: Params
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)
    # re-entrant: a part's build asks for others (the statistics need the generator); one lock
    # so two tasks on one worker's threads never load the same model twice
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def _once(self, key: Any, build: Any) -> Any:
        with self._lock:
            if key not in self._cache:
                self._cache[key] = build()
            return self._cache[key]

    def setting_path(self, value: str | os.PathLike | None) -> Path | None:
        if self.ws is not None:
            return self.ws.setting_path(value)
        return None if value is None else Path(value).expanduser()

    @property
    def device(self) -> str:
        """params.projection.device on this machine (auto: CUDA when it has one)."""
        def build() -> str:
            from embedding.projection import resolve_device

            try:
                return str(resolve_device(self.params.projection.device))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        return str(self._once("device", build))

    def generator(self, *, device: str = "cpu") -> tuple[Any, Any]:
        """(G, GeneratorInfo) for params.generator on `device`."""
        def build() -> tuple[Any, Any]:
            from embedding.stylegan2 import CheckpointError, GeneratorConfig, load_generator

            g = self.params.generator
            registered = self.registered_generator()
            path = registered.path if registered is not None else self.setting_path(g.checkpoint)
            try:
                G, info = load_generator(path, config=GeneratorConfig.from_params(g), seed=g.seed)
            except CheckpointError as exc:
                raise DataError(str(exc)) from None
            if registered is not None:
                info = dataclasses.replace(info, version=registered.label, source=str(self.params.generator.checkpoint))
            return G.to(device), info
        return self._once(("generator", device), build)  # type: ignore[no-any-return]

    def registered_generator(self) -> Any:
        """training.generator_registry.RegisteredGenerator when generator.checkpoint names a registry
        version (models:/NAME@ALIAS or models:/NAME/N), downloaded once into the workspace and
        checked; None for a file or the stand-in."""
        def build() -> Any:
            from training.generator_registry import is_registry_uri, resolve_generator

            uri = self.params.generator.checkpoint
            if not is_registry_uri(uri):
                return None
            from mlflow import MlflowClient

            return resolve_generator(MlflowClient(self.tracking_uri), str(uri),
                                     cache_dir=self._ws().root / "generators" / "registry")
        return self._once("registered_generator", build)

    def perceptual(self, *, device: str = "cpu") -> tuple[Any, Any]:
        """(network, PerceptualInfo) for params.perceptual, or (None, None) under the pixel loss,
        which needs no network."""
        def build() -> tuple[Any, Any]:
            if self.params.projection.loss == "mse":
                return None, None
            from embedding.perceptual import load_perceptual

            pp = self.params.perceptual
            try:
                net, info = load_perceptual(pp.network, self.setting_path(pp.vgg16_path), resize=pp.resize)
            except FileNotFoundError as exc:
                raise NotAvailableError(str(exc)) from None
            except ValueError as exc:
                raise ConfigError(f"perceptual network: {exc}") from None
            return net.to(device), info
        return self._once(("perceptual", device), build)  # type: ignore[no-any-return]

    def latent_stats(self, *, device: str = "cpu") -> Any:
        """The generator's latent statistics (projection's start and scale), drawn once."""
        def build() -> Any:
            from embedding.projection import latent_statistics

            G, _ = self.generator(device=device)
            return latent_statistics(G, samples=self.params.projection.w_avg_samples, device=device)
        return self._once(("stats", device), build)

    @property
    def aligner(self) -> Any:
        """embedding.align.Aligner for params.align (it loads the dlib models)."""
        def build() -> Any:
            from embedding.align import AlignConfig, Aligner

            return Aligner(AlignConfig.from_object(self.params.align))
        return self._once("aligner", build)

    @property
    def tracking_uri(self) -> str:
        """The MLflow store: registry.tracking_uri, the scale profile's database (created here
        when absent, never as a side effect of naming it), or the workspace's."""
        def build() -> str:
            from training.tracking import ensure_tracking_store, tracking_uri_for

            ensure_tracking_store(self.params)
            return tracking_uri_for(self.params, self._ws().mlflow_dir)
        return str(self._once("tracking_uri", build))

    @property
    def feature_repo(self) -> Path:
        return self._ws().feature_repo_dir

    def _ws(self) -> Workspace:
        if self.ws is None:
            raise ConfigError("this needs a workspace: pass --workspace or set FACESURV_WORKSPACE")
        return self.ws

    def encoder_path(self, *, device: str = "cpu") -> Path:
        """Where the encoder for this generator and params.encoder lives (or will): one folder per
        (generator sha256, encoder settings), so a new generator or new settings get their own."""
        import hashlib

        _, info = self.generator(device=device)
        e = self.params.encoder
        settings = {**e.training_options(), "space": self.encoder_space}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        store = self.setting_path(e.store) or self._ws().root / "generators" / "encoders"
        return store / f"{info.sha256[:16]}-{digest[:12]}"

    @property
    def encoder_space(self) -> str:
        """The encoder the projection's space needs: z for z, w for w and w+."""
        return "z" if self.params.projection.space == "z" else "w"

    def encoder(self, *, device: str = "cpu") -> tuple[Any, Any] | None:
        """(Encoder, EncoderInfo) when projection.init is encoder, else None. The encoder must have
        been trained for this generator (facesurv encoder train; the nightly flow trains it)."""
        if self.params.projection.init != "encoder":
            return None

        def build() -> tuple[Any, Any]:
            from embedding.encoder import ENCODER_FILE, load_encoder
            from embedding.stylegan2.store import StoreError

            path = self.encoder_path(device=device)
            _, ginfo = self.generator(device=device)
            if not (path / ENCODER_FILE).is_file():
                raise NotAvailableError(f"projection.init is encoder but no encoder is trained for generator "
                                        f"{ginfo.version or ginfo.sha256[:16]} with these encoder settings; run "
                                        "`facesurv encoder train` (the nightly flow trains it when missing)")
            try:
                E, info = load_encoder(path)
            except (StoreError, ValueError) as exc:
                raise DataError(f"encoder {path}: {exc}") from None
            if info.generator_sha256 != ginfo.sha256:
                raise DataError(f"{path}: this encoder was trained for generator {info.generator_sha256[:16]}..., "
                                f"not {ginfo.sha256[:16]}...; delete the folder and run `facesurv encoder train`")
            return E.to(device), info
        return self._once(("encoder", device), build)  # type: ignore[no-any-return]

    def projection(self, *, with_stats: bool = True, project_fn: Any = None) -> Any:
        """The one projection engine (embedding.project_batch.Projection) for params.projection on
        this machine's device. with_stats False: for planning only (its run key), so the latent
        statistics are not drawn."""
        from embedding.project_batch import Projection

        device = self.device
        return Projection.configured(self.params.projection, self.generator(device=device),
                                     self.perceptual(device=device), device=device,
                                     stats=self.latent_stats(device=device) if with_stats else None,
                                     project_fn=project_fn, encoder=self.encoder(device=device))

    def projection_batch_size(self) -> int:
        """Photos per projection batch: params.projection.batch_size on the CPU; on CUDA the largest
        multiple of 8 that fits the free memory (embedding.gpu, probed once per process)."""
        def build() -> int:
            from embedding.gpu import choose_batch_size

            pp, device = self.params.projection, self.device
            if device == "cpu":
                return int(pp.batch_size)
            G, _ = self.generator(device=device)
            net, _ = self.perceptual(device=device)
            return int(choose_batch_size(G, net, device=device, configured=pp.batch_size, space=pp.space,
                                         loss=pp.loss, mixed_precision=pp.mixed_precision))
        return int(self._once("projection_batch_size", build))

    def photo_pipeline(self) -> Any:
        """serving.photo.PhotoPipeline: this process's aligner and projection engine. One per
        Components, since its lock is what keeps the shared dlib aligner to one photo at a time."""
        def build() -> Any:
            from serving.photo import PhotoPipeline

            return PhotoPipeline(aligner=self.aligner, projection=self.projection())
        return self._once("photo_pipeline", build)


_SHARED: dict[tuple[str, str], Components] = {}
_SHARED_LOCK = threading.Lock()


def components(ws: Workspace | None, params: Params | None = None) -> Components:
    """The process's Components for (workspace, params), so a flow's tasks, run one after
    another in a worker, load the generator once. Two entries at most: old models are not
    pinned in memory."""
    if params is None:
        if ws is None:
            raise ConfigError("components need params or a workspace to read them from")
        params = ws.load_params()
    key = (str(ws.root.resolve()) if ws else "", json.dumps(params.to_dict(), sort_keys=True, default=str))
    with _SHARED_LOCK:
        if key not in _SHARED:
            while len(_SHARED) >= 2:
                _SHARED.pop(next(iter(_SHARED)))
            _SHARED[key] = Components(ws, params)
        return _SHARED[key]


@dataclass
class Server:
    app: Any
    ledger: Any
    ledger_location: str
    model: str
    generated_token: str | None   # set when the local profile had no token and made one for this run
    notes: list[str]


def build_scorer(ws: Workspace, params: Params, *, read_features: Any = "feast",
                 photo_scoring: bool | None = None) -> tuple[Any, list[str]]:
    """(serving.scoring.Scorer, notes): the champion, the online store and (optionally) the photo
    pipeline, loaded once. `facesurv serve` and `facesurv score` both score through this.

    read_features: "feast" (the workspace's feature repo) or a FeatureReader to use instead.
    """
    from serving.scoring import LineageContext, Scorer, dvc_photo_version, load_champion

    parts = components(ws, params)
    notes: list[str] = []
    model = load_champion(params.registry.model_name, tracking_uri=parts.tracking_uri)
    reader = read_features
    if read_features == "feast":
        if (parts.feature_repo / "feature_store.yaml").is_file():
            from serving.online import FeastFeatureReader

            reader = FeastFeatureReader(parts.feature_repo, params)
        else:
            reader = None
            notes.append(f"no feature repo at {parts.feature_repo}: POST /v1/scores answers 503 "
                         "(run `facesurv features apply` and materialize)")
    embed = None
    if params.serving.photo_scoring if photo_scoring is None else photo_scoring:
        embed = parts.photo_pipeline()
        if embed.generator_info.is_random_init:
            notes.append("photo scoring runs on a RANDOM-INIT stand-in generator: "
                         + embed.generator_info.description)
    ctx = LineageContext(code_version=code_version(), params_hash=params.params_hash,
                         photo_data=dvc_photo_version(ws.data_dir))
    scorer = Scorer(model=model, read_features=reader, context=ctx, embed_photo=embed,
                    projection_settings=embed.settings() if embed else None)
    return scorer, notes


def open_scoring_ledger(ws: Workspace, params: Params) -> Any:
    """The workspace's ledger as the server writes it: signing every record with the ledger key
    and anchoring to a file outside the database."""
    from serving.anchor import anchor_settings
    from serving.ledger import open_ledger
    from serving.wiring import ledger_target

    return open_ledger(ledger_target(ws, params), schema=params.serving.ledger_schema,
                       anchoring=anchor_settings(ws, params))


def rescore_every_patient(ws: Workspace, params: Params, *, requested_by: str,
                          progress: Any = None) -> dict[str, Any]:
    """serving.bulk.rescore_all over every patient of the workspace's feature store, with the scorer
    and ledger `facesurv serve` uses; the summary as a dict. progress(done, total) per chunk."""
    from serving.bulk import rescore_all, store_patients

    ids = store_patients(ws.feature_repo_dir, params)
    scorer, _notes = build_scorer(ws, params, photo_scoring=False)
    ledger = open_scoring_ledger(ws, params)
    try:
        return rescore_all(scorer, ledger, ids, requested_by=requested_by, progress=progress).to_dict()
    finally:
        ledger.close()


def build_server(ws: Workspace, params: Params, *, env: dict[str, str] | None = None,
                 read_features: Any = "feast", photo_scoring: bool | None = None) -> Server:
    """Load the champion, open the online store and the ledger, and build the app (seconds, once).

    read_features: "feast" (the workspace's feature repo) or a FeatureReader to use instead.
    """
    from serving.app import create_app
    from serving.privacy import PSEUDONYM_KEY_ENV, load_pseudonym_key
    from serving.wiring import load_tokens, upload_dir

    env = dict(os.environ if env is None else env)
    tokens, generated = load_tokens(ws, params, env)
    scorer, notes = build_scorer(ws, params, read_features=read_features, photo_scoring=photo_scoring)
    model = scorer.model
    ledger = open_scoring_ledger(ws, params)
    try:
        key = load_pseudonym_key(ws.root / "serving" / "pseudonym.key", env=env.get(PSEUDONYM_KEY_ENV))
        app = create_app(scorer=scorer, ledger=ledger, tokens=tokens, settings=params.serving, pseudonym_key=key,
                         clinical_base=params.cohort.base,
                         age_range=(params.contracts.age_min, params.contracts.age_max),
                         upload_dir=upload_dir(ws), max_batch=params.serving.max_batch)
    except BaseException:
        ledger.close()
        raise
    return Server(app=app, ledger=ledger, ledger_location=ledger.describe(),
                  model=f"{model.name} v{model.version} (@{model.alias}, run {model.run_id})",
                  generated_token=generated, notes=notes)
