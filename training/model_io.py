"""Fitted survival models as plain data: JSON parameters and safetensors weights, nothing that runs.

    save_model(model, directory)   # writes the files below; refuses an unfitted model
    model = load_model(directory)  # rebuilds it with this project's classes

A pickle names the code that rebuilds it, so loading one can run anything (an `os.system`
payload did, when a server started). Here the files hold numbers and names only; the classes
that use them are this project's, chosen by `kind` from a fixed table. Layout (FORMAT_VERSION 1):

    model.json           format, format_version, kind, seed, hyperparameters, fitted arrays
    preprocessor.json    the fitted Preprocessor: columns, means, scales, category levels
    baseline.json        Breslow baseline (event times, cumulative hazard) and the sorted
                         training risks (for percentiles)
    network.json         deepsurv only: the MLP's architecture, rebuilt by our code
    network.safetensors  deepsurv only: its weights and batch-norm buffers
    members/<name>/      fusion only: each member, saved the same way

Floats are written as JSON numbers (Python's shortest round-tripping repr), so a loaded model
predicts bit-identical risks. Loading checks every field's type, length and range against the
others, refuses any file it does not expect, and raises one-line DataErrors that say what to do.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ground.errors import DataError
from training.base import SurvivalModel
from training.preprocess import Preprocessor

FORMAT = "facesurv.survival-model"
FORMAT_VERSION = 1
MODEL_FILE, PREPROCESSOR_FILE, BASELINE_FILE = "model.json", "preprocessor.json", "baseline.json"
NETWORK_CONFIG_FILE, NETWORK_WEIGHTS_FILE = "network.json", "network.safetensors"
MEMBERS_DIR = "members"
# Far above any real model here (a 512-d Coxnet with 10^5 training risks is a few MB); a
# cap keeps a hostile file from exhausting memory before it is parsed.
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_WEIGHTS_BYTES = 512 * 1024 * 1024
_MEMBER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_ACTIVATIONS = ("relu", "selu", "elu")
_RETRAIN = "retrain the model (facesurv train)"


# -- writing ---------------------------------------------------------------------------------------

def save_model(model: SurvivalModel, directory: Path) -> Path:
    """Write a fitted model to `directory` (created; must be empty or absent). Returns it."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise DataError(f"{directory}: not empty; save a model into a new directory")
    writer = _WRITERS.get(model.kind)
    if writer is None:
        raise DataError(f"cannot save a model of kind {model.kind!r}; known kinds: {', '.join(_WRITERS)}")
    if model.baseline_cumhaz_ is None or model.train_risk_sorted_ is None:
        raise DataError(f"{model.kind}: the model is not fitted; fit it before saving")
    directory.mkdir(parents=True, exist_ok=True)
    state = writer(model, directory)
    _write_json(directory / MODEL_FILE, {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": model.kind,
                                         "seed": int(model.seed), "needs_latent": bool(model.needs_latent),
                                         **state})
    _write_json(directory / PREPROCESSOR_FILE, preprocessor_state(model.preprocessor))
    _write_json(directory / BASELINE_FILE, {"times": _floats(model.baseline_times_),
                                            "cumhaz": _floats(model.baseline_cumhaz_),
                                            "train_risk_sorted": _floats(model.train_risk_sorted_)})
    return directory


def preprocessor_state(p: Preprocessor) -> dict[str, Any]:
    return {"numeric": list(p.numeric), "categorical": list(p.categorical), "use_latent": bool(p.use_latent),
            "latent_dim": int(p.latent_dim_), "means": _floats(p.means_), "scales": _floats(p.scales_),
            "levels": {c: [str(v) for v in p.levels_[c]] for c in p.categorical}}


def _floats(a: Any, *, allow_nan: bool = False) -> list[float | None]:
    arr = np.asarray(a, dtype=np.float64).ravel()
    if not allow_nan and not np.isfinite(arr).all():
        raise DataError("the model holds non-finite numbers and cannot be saved; " + _RETRAIN)
    # JSON has no NaN: an undefined value (a CV fold without events) is written as null
    return [float(v) if math.isfinite(v) else None for v in arr.tolist()]


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, allow_nan=False, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _fitted(value: Any, kind: str) -> Any:
    if value is None:
        raise DataError(f"{kind}: the model is not fitted; fit it before saving")
    return value


def _write_coxph(model: Any, directory: Path) -> dict[str, Any]:
    return {"params": {"alpha": float(model.alpha)}, "coef": _floats(_fitted(model.coef_, model.kind))}


def _write_coxnet(model: Any, directory: Path) -> dict[str, Any]:
    cv = model.cv_scores_
    return {"params": {"l1_ratio": float(model.l1_ratio), "alpha_min_ratio": float(model.alpha_min_ratio),
                       "folds": int(model.folds), "n_alphas": int(model.n_alphas)},
            "alpha": float(_fitted(model.alpha_, model.kind)), "coef": _floats(_fitted(model.coef_, model.kind)),
            "cv_scores": None if cv is None else _floats(cv, allow_nan=True)}


def _write_deepsurv(model: Any, directory: Path) -> dict[str, Any]:
    from safetensors.torch import save_file

    net = _fitted(model.net_, model.kind)
    cfg = model.config
    arch = {"in_features": int(model.preprocessor.n_features), "hidden": [int(h) for h in cfg["hidden"]],
            "out_features": 1, "batch_norm": bool(cfg["batch_norm"]), "dropout": float(cfg["dropout"] or 0.0),
            "activation": str(cfg["activation"]), "output_bias": False}
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    # a network our rebuild cannot hold must fail here, at training, not when a server starts
    _check_state_fits(_build_network(arch, where=str(directory)), state, where=str(directory))
    _write_json(directory / NETWORK_CONFIG_FILE, arch)
    save_file(state, str(directory / NETWORK_WEIGHTS_FILE), metadata={"format": FORMAT})
    return {"params": {"hidden": [int(h) for h in cfg["hidden"]], "dropout": float(cfg["dropout"] or 0.0),
                       "lr": float(cfg["lr"]), "weight_decay": float(cfg["weight_decay"]),
                       "epochs": int(cfg["epochs"]), "batch_size": int(cfg["batch_size"]),
                       "val_fraction": float(cfg["val_fraction"]), "patience": int(cfg["patience"]),
                       "batch_norm": bool(cfg["batch_norm"]), "activation": str(cfg["activation"])}}


def _write_fusion(model: Any, directory: Path) -> dict[str, Any]:
    names = list(model.members)
    for name in names:
        if not _MEMBER_NAME.match(name):
            raise DataError(f"fusion member name {name!r} cannot be a folder name; use letters, digits, _ and -")
        save_model(model.members[name], directory / MEMBERS_DIR / name)
    return {"params": {"alpha": float(model.alpha)}, "members": names,
            "mean": _floats(_fitted(model.mean_, model.kind)), "scale": _floats(_fitted(model.scale_, model.kind)),
            "coef": _floats(_fitted(model.coef_, model.kind))}


_WRITERS: dict[str, Callable[[Any, Path], dict[str, Any]]] = {
    "coxph": _write_coxph, "coxnet": _write_coxnet, "deepsurv": _write_deepsurv, "fusion": _write_fusion}


# -- reading ---------------------------------------------------------------------------------------

def load_model(directory: Path) -> SurvivalModel:
    """Rebuild a model saved by `save_model`; DataError (naming the file and field) if anything is off."""
    return _load(Path(directory), depth=0)


def _load(directory: Path, *, depth: int) -> SurvivalModel:
    if not directory.is_dir() or directory.is_symlink():
        raise DataError(f"{directory}: not a saved model directory; " + _RETRAIN)
    head = _read_json(directory / MODEL_FILE)
    where = str(directory / MODEL_FILE)
    _expect_keys(head, where, required=("format", "format_version", "kind", "seed", "needs_latent", "params"))
    if head["format"] != FORMAT:
        raise DataError(f"{where}: format {head['format']!r} is not {FORMAT!r}; not a facesurv model, " + _RETRAIN)
    version = head["format_version"]
    if type(version) is not int or version != FORMAT_VERSION:
        newer = type(version) is int and version > FORMAT_VERSION
        raise DataError(f"{where}: model format version {version!r} is not supported (this facesurv reads "
                        f"{FORMAT_VERSION}); " + ("upgrade facesurv" if newer else _RETRAIN))
    kind = head["kind"]
    reader = _READERS.get(kind) if isinstance(kind, str) else None
    if reader is None:
        raise DataError(f"{where}: unknown model kind {kind!r}; known kinds: {', '.join(_READERS)}")
    if kind == "fusion" and depth > 0:
        raise DataError(f"{where}: a fusion member cannot itself be a fusion; " + _RETRAIN)
    expected = {MODEL_FILE, PREPROCESSOR_FILE, BASELINE_FILE, *_EXTRA_FILES.get(kind, ())}
    _refuse_unexpected(directory, expected)
    pre = preprocessor_from_state(_read_json(directory / PREPROCESSOR_FILE), where=str(directory / PREPROCESSOR_FILE))
    seed = _int(head["seed"], where, "seed")
    model = reader(head, pre, seed, directory, where)
    _set_baseline(model, _read_json(directory / BASELINE_FILE), where=str(directory / BASELINE_FILE))
    if _bool(head["needs_latent"], where, "needs_latent") != bool(model.needs_latent):
        raise DataError(f"{where}: needs_latent={head['needs_latent']} contradicts the model's features; " + _RETRAIN)
    return model


def preprocessor_from_state(state: Any, *, where: str) -> Preprocessor:
    _expect_keys(state, where, required=("numeric", "categorical", "use_latent", "latent_dim", "means", "scales",
                                         "levels"), exact=True)
    numeric = _names(state["numeric"], where, "numeric")
    categorical = _names(state["categorical"], where, "categorical")
    if set(numeric) & set(categorical):
        raise DataError(f"{where}: columns {sorted(set(numeric) & set(categorical))} are both numeric and "
                        "categorical; " + _RETRAIN)
    use_latent = _bool(state["use_latent"], where, "use_latent")
    latent_dim = _int(state["latent_dim"], where, "latent_dim", minimum=0)
    if not use_latent and latent_dim:
        raise DataError(f"{where}: latent_dim is {latent_dim} but use_latent is false; " + _RETRAIN)
    width = len(numeric) + latent_dim
    means = _array(state["means"], where, "means", length=width)
    scales = _array(state["scales"], where, "scales", length=width)
    if (scales <= 0).any():
        raise DataError(f"{where}: scales must be positive; " + _RETRAIN)
    levels = state["levels"]
    if not isinstance(levels, dict) or set(levels) != set(categorical):
        raise DataError(f"{where}: levels must name exactly the categorical columns {list(categorical)}; " + _RETRAIN)
    parsed: dict[str, list[str]] = {}
    for col in categorical:
        lv = levels[col]
        if (not isinstance(lv, list) or not lv or not all(isinstance(v, str) for v in lv)
                or len(set(lv)) != len(lv)):
            raise DataError(f"{where}: levels of {col!r} must be a non-empty list of distinct strings; " + _RETRAIN)
        parsed[col] = list(lv)
    return Preprocessor(numeric, categorical, use_latent=use_latent, means_=means, scales_=scales,
                        levels_=parsed, latent_dim_=latent_dim)


def _set_baseline(model: SurvivalModel, state: Any, *, where: str) -> None:
    _expect_keys(state, where, required=("times", "cumhaz", "train_risk_sorted"), exact=True)
    times = _array(state["times"], where, "times")
    cumhaz = _array(state["cumhaz"], where, "cumhaz", length=len(times))
    risks = _array(state["train_risk_sorted"], where, "train_risk_sorted")
    if len(risks) == 0:
        raise DataError(f"{where}: train_risk_sorted is empty; " + _RETRAIN)
    if np.any(np.diff(times) <= 0) or np.any(np.diff(cumhaz) < 0) or np.any(cumhaz < 0) or np.any(np.diff(risks) < 0):
        raise DataError(f"{where}: the baseline must have increasing times, a non-negative non-decreasing "
                        "cumulative hazard and sorted training risks; " + _RETRAIN)
    model.baseline_times_, model.baseline_cumhaz_, model.train_risk_sorted_ = times, cumhaz, risks


def _read_coxph(head: dict, pre: Preprocessor, seed: int, directory: Path, where: str) -> SurvivalModel:
    from training.coxph import CoxPHModel

    _expect_keys(head, where, required=(*_HEAD, "coef"), exact=True)
    params = _params(head, where, floats=("alpha",))
    model = CoxPHModel(pre, alpha=params["alpha"], seed=seed)
    model.coef_ = _array(head["coef"], where, "coef", length=pre.n_features)
    return model


def _read_coxnet(head: dict, pre: Preprocessor, seed: int, directory: Path, where: str) -> SurvivalModel:
    from training.coxnet import CoxnetModel

    _expect_keys(head, where, required=(*_HEAD, "alpha", "coef", "cv_scores"), exact=True)
    p = _params(head, where, floats=("l1_ratio", "alpha_min_ratio"), ints=("folds", "n_alphas"))
    if not pre.use_latent:
        raise DataError(f"{where}: a coxnet model reads latents but its preprocessor does not; " + _RETRAIN)
    model = CoxnetModel(pre, l1_ratio=p["l1_ratio"], alpha_min_ratio=p["alpha_min_ratio"], folds=p["folds"],
                        n_alphas=p["n_alphas"], seed=seed)
    model.alpha_ = _float(head["alpha"], where, "alpha")
    model.coef_ = _array(head["coef"], where, "coef", length=pre.n_features)
    model.cv_scores_ = None if head["cv_scores"] is None else _array(head["cv_scores"], where, "cv_scores",
                                                                     allow_null=True)
    return model


def _read_deepsurv(head: dict, pre: Preprocessor, seed: int, directory: Path, where: str) -> SurvivalModel:
    from training.deepsurv import DeepSurvModel

    _expect_keys(head, where, required=_HEAD, exact=True)
    p = _params(head, where, floats=("dropout", "lr", "weight_decay", "val_fraction"),
                ints=("epochs", "batch_size", "patience"), bools=("batch_norm",), extra=("hidden", "activation"))
    hidden = _int_list(p["hidden"], where, "params.hidden")
    if p["activation"] not in _ACTIVATIONS:
        raise DataError(f"{where}: params.activation {p['activation']!r} is not one of {_ACTIVATIONS}; " + _RETRAIN)
    model = DeepSurvModel(pre, hidden=tuple(hidden), dropout=p["dropout"], lr=p["lr"],
                          weight_decay=p["weight_decay"], epochs=p["epochs"], batch_size=p["batch_size"],
                          val_fraction=p["val_fraction"], patience=p["patience"], batch_norm=p["batch_norm"],
                          activation=p["activation"], seed=seed)
    arch_where = str(directory / NETWORK_CONFIG_FILE)
    arch = _read_json(directory / NETWORK_CONFIG_FILE)
    _expect_keys(arch, arch_where, required=("in_features", "hidden", "out_features", "batch_norm", "dropout",
                                             "activation", "output_bias"), exact=True)
    if _int(arch["in_features"], arch_where, "in_features", minimum=1) != pre.n_features:
        raise DataError(f"{arch_where}: in_features {arch['in_features']} differs from the preprocessor's "
                        f"{pre.n_features} features; " + _RETRAIN)
    if (_int_list(arch["hidden"], arch_where, "hidden") != hidden
            or arch["batch_norm"] != p["batch_norm"] or arch["activation"] != p["activation"]):
        raise DataError(f"{arch_where}: the architecture contradicts the model's parameters in {where}; " + _RETRAIN)
    net = _build_network(arch, where=arch_where)
    _load_weights(net, directory / NETWORK_WEIGHTS_FILE)
    model.net_ = net
    return model


def _read_fusion(head: dict, pre: Preprocessor, seed: int, directory: Path, where: str) -> SurvivalModel:
    from training.fusion import FusionModel

    _expect_keys(head, where, required=(*_HEAD, "members", "mean", "scale", "coef"), exact=True)
    params = _params(head, where, floats=("alpha",))
    names = head["members"]
    if (not isinstance(names, list) or not names or len(set(names)) != len(names)
            or not all(isinstance(n, str) and _MEMBER_NAME.match(n) for n in names)):
        raise DataError(f"{where}: members must be a non-empty list of distinct simple names; " + _RETRAIN)
    folder = directory / MEMBERS_DIR
    _refuse_unexpected(folder, set(names), what="member folder")
    members = {n: _load(folder / n, depth=1) for n in names}
    model = FusionModel(members, alpha=params["alpha"], seed=seed)
    model.preprocessor = pre
    model.mean_ = _array(head["mean"], where, "mean", length=len(names))
    model.scale_ = _array(head["scale"], where, "scale", length=len(names))
    model.coef_ = _array(head["coef"], where, "coef", length=len(names))
    if (model.scale_ <= 0).any():
        raise DataError(f"{where}: scale must be positive; " + _RETRAIN)
    return model


_HEAD = ("format", "format_version", "kind", "seed", "needs_latent", "params")
_READERS: dict[str, Callable[[dict, Preprocessor, int, Path, str], SurvivalModel]] = {
    "coxph": _read_coxph, "coxnet": _read_coxnet, "deepsurv": _read_deepsurv, "fusion": _read_fusion}
_EXTRA_FILES = {"deepsurv": (NETWORK_CONFIG_FILE, NETWORK_WEIGHTS_FILE), "fusion": (MEMBERS_DIR,)}


# -- the DeepSurv network ------------------------------------------------------------------------

def _build_network(arch: Mapping[str, Any], *, where: str) -> Any:
    """The MLP `fit_net` trains (torchtuples' MLPVanilla), built from the architecture alone."""
    import torch
    import torchtuples as tt

    if arch.get("out_features") != 1 or arch.get("output_bias") is not False:
        raise DataError(f"{where}: DeepSurv has one output without bias; " + _RETRAIN)
    activation = arch.get("activation")
    if activation not in _ACTIVATIONS:
        raise DataError(f"{where}: activation {activation!r} is not one of {_ACTIVATIONS}; " + _RETRAIN)
    hidden = _int_list(arch.get("hidden"), where, "hidden")
    dropout = _float(arch.get("dropout"), where, "dropout")
    if not 0.0 <= dropout < 1.0:
        raise DataError(f"{where}: dropout {dropout} is outside [0, 1); " + _RETRAIN)
    act = {"relu": torch.nn.ReLU, "selu": torch.nn.SELU, "elu": torch.nn.ELU}[activation]
    # the random initial weights are overwritten at once; forking the RNG keeps a load from
    # shifting the seeded random stream of whatever runs next in this process
    with torch.random.fork_rng(devices=[]):
        net = tt.practical.MLPVanilla(_int(arch.get("in_features"), where, "in_features", minimum=1), hidden, 1,
                                      batch_norm=_bool(arch.get("batch_norm"), where, "batch_norm"),
                                      dropout=dropout or None, activation=act, output_bias=False)
    return net


def _check_state_fits(net: Any, state: Mapping[str, Any], *, where: str) -> None:
    want = {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}
    got = {k: (tuple(v.shape), v.dtype) for k, v in state.items()}
    if set(want) != set(got):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        raise DataError(f"{where}: network weights do not match the architecture (missing {missing[:3]}, "
                        f"unexpected {extra[:3]}); " + _RETRAIN)
    for k, (shape, dtype) in want.items():
        if got[k] != (shape, dtype):
            raise DataError(f"{where}: weight {k} is {got[k][1]} {list(got[k][0])}, the architecture needs "
                            f"{dtype} {list(shape)}; " + _RETRAIN)


def _load_weights(net: Any, path: Path) -> None:
    from safetensors.torch import load

    if not path.is_file() or path.is_symlink():
        raise DataError(f"{path}: missing; " + _RETRAIN)
    if path.stat().st_size > MAX_WEIGHTS_BYTES:
        raise DataError(f"{path}: larger than {MAX_WEIGHTS_BYTES >> 20} MiB; not a facesurv network, " + _RETRAIN)
    try:
        state = load(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - the parser's errors vary by malformation; all mean "unreadable"
        raise DataError(f"{path}: not a readable safetensors file ({type(exc).__name__}); " + _RETRAIN) from None
    _check_state_fits(net, state, where=str(path))
    for k, v in state.items():
        if v.is_floating_point() and not bool(v.isfinite().all()):
            raise DataError(f"{path}: weight {k} holds non-finite numbers; " + _RETRAIN)
    net.load_state_dict(state, strict=True)
    net.eval()


# -- strict field readers -------------------------------------------------------------------------

def _read_json(path: Path) -> Any:
    if not path.is_file() or path.is_symlink():
        raise DataError(f"{path}: missing (or not a regular file); " + _RETRAIN)
    if path.stat().st_size > MAX_JSON_BYTES:
        raise DataError(f"{path}: larger than {MAX_JSON_BYTES >> 20} MiB; not a facesurv model file, " + _RETRAIN)

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not a number JSON allows")

    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=no_constants)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise DataError(f"{path}: not valid JSON ({type(exc).__name__}: {str(exc)[:80]}); " + _RETRAIN) from None


def _refuse_unexpected(directory: Path, expected: set[str], *, what: str = "file") -> None:
    if not directory.is_dir() or directory.is_symlink():
        raise DataError(f"{directory}: missing; " + _RETRAIN)
    present = {p.name for p in directory.iterdir()}
    extra, missing = sorted(present - expected), sorted(expected - present)
    if extra:
        raise DataError(f"{directory}: unexpected {what} {extra[0]!r}; a saved model holds only "
                        f"{sorted(expected)} (refusing to load anything else)")
    if missing:
        raise DataError(f"{directory}: {what} {missing[0]!r} is missing; " + _RETRAIN)


def _expect_keys(obj: Any, where: str, *, required: Sequence[str], exact: bool = False) -> None:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object; " + _RETRAIN)
    missing = [k for k in required if k not in obj]
    if missing:
        raise DataError(f"{where}: field {missing[0]!r} is missing; " + _RETRAIN)
    extra = sorted(set(obj) - set(required))
    if exact and extra:
        raise DataError(f"{where}: unexpected field {extra[0]!r}; " + _RETRAIN)


def _params(head: dict, where: str, *, floats: Sequence[str] = (), ints: Sequence[str] = (),
            bools: Sequence[str] = (), extra: Sequence[str] = ()) -> dict[str, Any]:
    p = head["params"]
    _expect_keys(p, f"{where} params", required=(*floats, *ints, *bools, *extra), exact=True)
    out: dict[str, Any] = {k: _float(p[k], where, f"params.{k}") for k in floats}
    out.update({k: _int(p[k], where, f"params.{k}") for k in ints})
    out.update({k: _bool(p[k], where, f"params.{k}") for k in bools})
    out.update({k: p[k] for k in extra})
    return out


def _float(v: Any, where: str, field: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise DataError(f"{where}: {field} must be a finite number, found {str(v)[:40]!r}; " + _RETRAIN)
    return float(v)


def _int(v: Any, where: str, field: str, *, minimum: int | None = None) -> int:
    if type(v) is not int or (minimum is not None and v < minimum):
        raise DataError(f"{where}: {field} must be an integer{'' if minimum is None else f' >= {minimum}'}, "
                        f"found {str(v)[:40]!r}; " + _RETRAIN)
    return v


def _bool(v: Any, where: str, field: str) -> bool:
    if type(v) is not bool:
        raise DataError(f"{where}: {field} must be true or false, found {str(v)[:40]!r}; " + _RETRAIN)
    return v


def _int_list(v: Any, where: str, field: str) -> list[int]:
    if not isinstance(v, list) or not v or not all(type(x) is int and 0 < x <= 1_000_000 for x in v):
        raise DataError(f"{where}: {field} must be a non-empty list of positive layer sizes; " + _RETRAIN)
    return list(v)


def _names(v: Any, where: str, field: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v) or len(set(v)) != len(v):
        raise DataError(f"{where}: {field} must be a list of distinct column names; " + _RETRAIN)
    return tuple(v)


def _array(v: Any, where: str, field: str, *, length: int | None = None, allow_null: bool = False) -> np.ndarray:
    """A flat list of finite JSON numbers (null -> NaN only where allowed) as float64."""
    ok = isinstance(v, list) and all(
        (x is None and allow_null) or (not isinstance(x, bool) and isinstance(x, int | float) and math.isfinite(x))
        for x in v)
    if not ok:
        raise DataError(f"{where}: {field} must be a list of finite numbers; " + _RETRAIN)
    if length is not None and len(v) != length:
        raise DataError(f"{where}: {field} has {len(v)} values, the model needs {length}; " + _RETRAIN)
    return np.array([math.nan if x is None else float(x) for x in v], dtype=np.float64)
