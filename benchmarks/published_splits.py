"""CoxPH and DeepSurv on the DeepSurv paper's own train/test splits (Katzman et al. 2018).

    python benchmarks/published_splits.py --data ../shared/survival --out FILE.json

writes {dataset: {model: test_c_index}} for metabric, support, gbsg x coxph, deepsurv, and
FILE.details.json with the chosen hyperparameters, validation scores and timings.

As in the paper, DeepSurv's hyperparameters are tuned per dataset on the TRAINING part
only (a small grid scored by seeded, event-stratified 5-fold cross-validation; the paper
used random search with cross-validation); the test part is touched once, by the chosen configuration. The final
DeepSurv is a seeded ensemble of networks with that configuration, each trained on the
full training part with its own early-stopping split, averaging log-risks.
Harrell's C is the paper's metric.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

DATASETS = {
    "metabric": "metabric_IHC4_clinical_train_test.h5",
    "support": "support_train_test.h5",
    "gbsg": "gbsg_cancer_train_test.h5",
}
PUBLISHED = {
    "metabric": {"coxph": 0.631, "deepsurv": 0.654},
    "support": {"coxph": 0.583, "deepsurv": 0.618},
    "gbsg": {"coxph": 0.658, "deepsurv": 0.676},
}
# The paper's tuned networks (one SELU hidden layer of 41 / 44 / 8 units) seed the grid;
# pycox-style ReLU + batch-norm MLPs complete it.
GRID = [  # (hidden, dropout, lr); ReLU + batch norm, weight decay 1e-4
    ((32, 32), 0.1, 1e-2),
    ((32, 32), 0.4, 1e-2),
    ((64, 64), 0.1, 1e-3),
    ((16,), 0.1, 1e-2),
    ((64,), 0.4, 1e-3),
    ((64, 64), 0.4, 1e-2),
]
PAPER_LIKE = {
    "metabric": dict(hidden=(41,), dropout=0.16, lr=1e-2, weight_decay=1e-3, activation="selu", batch_norm=False),
    "support": dict(hidden=(44,), dropout=0.255, lr=1e-2, weight_decay=1e-3, activation="selu", batch_norm=False),
    "gbsg": dict(hidden=(8,), dropout=0.5, lr=1e-2, weight_decay=1e-3, activation="selu", batch_norm=False),
}
FIXED = dict(epochs=500, batch_size=256, val_fraction=0.2, patience=20)


def load_split(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        for part in ("train", "test"):
            x = np.asarray(f[part]["x"], dtype=np.float64)
            t = np.asarray(f[part]["t"], dtype=np.float64).ravel()
            e = np.asarray(f[part]["e"]).ravel().astype(bool)
            out[part] = (x, t, e)
    return out


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mu, sd = train.mean(axis=0), train.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return [(a - mu) / sd for a in (train, *others)]


def harrell(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    from sksurv.metrics import concordance_index_censored

    return float(concordance_index_censored(event, time, risk)[0])


def coxph_c(x_tr, t_tr, e_tr, x_te, t_te, e_te) -> float:
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    est = CoxPHSurvivalAnalysis(alpha=1e-4).fit(x_tr, Surv.from_arrays(e_tr, t_tr))
    return harrell(t_te, e_te, est.predict(x_te))


def configs(name: str) -> list[dict]:
    grid = [dict(hidden=h, dropout=d, lr=lr, weight_decay=1e-4, activation="relu", batch_norm=True)
            for h, d, lr in GRID]
    return [PAPER_LIKE[name], *grid]


def deepsurv_risk(cfg: dict, x_tr, t_tr, e_tr, x_ev, seeds: list[int]) -> np.ndarray:
    from training.deepsurv import fit_net, net_log_risk

    risks = []
    for s in seeds:
        net = fit_net(x_tr, t_tr, e_tr, seed=s, **{**FIXED, **cfg})
        risks.append(net_log_risk(net, x_ev))
    return np.mean(risks, axis=0)


def run_dataset(name: str, path: Path, *, seed: int, tune_seeds: int, cv_folds: int, ensemble: int, log) -> tuple[dict, dict]:
    d = load_split(path)
    (x_tr, t_tr, e_tr), (x_te, t_te, e_te) = d["train"], d["test"]
    x_tr, x_te = standardise(x_tr, x_te)
    t0 = time.perf_counter()
    c_cox = coxph_c(x_tr, t_tr, e_tr, x_te, t_te, e_te)
    t_cox = time.perf_counter() - t0

    # tuning on the training part only: mean validation C over seeded, event-stratified folds
    from sklearn.model_selection import StratifiedKFold

    folds = list(StratifiedKFold(n_splits=cv_folds, shuffle=True, random_state=seed).split(x_tr, e_tr))
    scores = []
    t0 = time.perf_counter()
    for cfg in configs(name):
        cs = []
        for k, (fit_idx, val_idx) in enumerate(folds):
            xf, xv = standardise(x_tr[fit_idx], x_tr[val_idx])
            risk = deepsurv_risk(cfg, xf, t_tr[fit_idx], e_tr[fit_idx], xv,
                                 [seed + 10 * k + j for j in range(tune_seeds)])
            cs.append(harrell(t_tr[val_idx], e_tr[val_idx], risk))
        c = float(np.mean(cs))
        scores.append((c, cfg))
        log(f"  {name} val C={c:.4f} (folds {', '.join(f'{v:.3f}' for v in cs)}) {cfg}")
    best_c, best = max(scores, key=lambda s: s[0])
    t_tune = time.perf_counter() - t0

    t0 = time.perf_counter()
    risk = deepsurv_risk(best, x_tr, t_tr, e_tr, x_te, [seed + 100 + k for k in range(ensemble)])
    c_ds = harrell(t_te, e_te, risk)
    t_final = time.perf_counter() - t0
    log(f"{name}: coxph {c_cox:.4f} (published {PUBLISHED[name]['coxph']}), deepsurv {c_ds:.4f} "
        f"(published {PUBLISHED[name]['deepsurv']}); best val C {best_c:.4f} with {best}")
    details = {"n_train": int(len(t_tr)), "n_test": int(len(t_te)), "p": int(x_tr.shape[1]),
               "published": PUBLISHED[name], "deepsurv_config": {**FIXED, **best, "hidden": list(best["hidden"])},
               "cv_folds": cv_folds, "cv_c_index": round(best_c, 4), "ensemble": ensemble,
               "seconds": {"coxph": round(t_cox, 1), "tuning": round(t_tune, 1), "final": round(t_final, 1)}}
    return {"coxph": round(c_cox, 4), "deepsurv": round(c_ds, 4)}, details


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with the three HDF5 files")
    ap.add_argument("--out", type=Path, required=True, help="JSON file for {dataset: {model: test_c_index}}")
    ap.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated subset")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tune-seeds", type=int, default=1, help="networks per configuration when tuning")
    ap.add_argument("--cv-folds", type=int, default=5, help="folds of the training part for tuning")
    ap.add_argument("--ensemble", type=int, default=5, help="networks averaged in the final DeepSurv")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = ap.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository's training package
    import torch

    torch.set_num_threads(args.threads)  # tiny networks: more threads only add contention
    results, details = {}, {}
    for name in args.datasets.split(","):
        if name not in DATASETS:
            ap.error(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
        path = args.data / DATASETS[name]
        if not path.is_file():
            print(f"error: {path} not found; pass --data pointing at the folder with the DeepSurv HDF5 splits",
                  file=sys.stderr)
            return 2
        results[name], details[name] = run_dataset(name, path, seed=args.seed, tune_seeds=args.tune_seeds, cv_folds=args.cv_folds,
                                                   ensemble=args.ensemble, log=lambda m: print(m, flush=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(args.out)
    meta = {"machine": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d", time.gmtime()), "seed": args.seed, "datasets": details}
    args.out.with_suffix(".details.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
