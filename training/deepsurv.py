"""DeepSurv: pycox's CoxPH loss on a torchtuples MLP (Katzman et al. 2018).

The network is trained with early stopping on a seeded, event-stratified validation part of
the training set; the Breslow baseline is then computed on the whole training set with the
same code as the linear models. Only the torch module is kept (pycox's wrapper holds the
optimiser and training data, which a saved model must not carry).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ground.errors import DataError
from training.base import SurvivalModel
from training.preprocess import Preprocessor


def pycox_models():
    """Import pycox.models after the SciPy shim.

    pycox 0.3.0 calls scipy.integrate.simps, removed in SciPy 1.14; `simpson` is the same
    integral. pycox.datasets downloads from the internet and is never used here.
    """
    import scipy.integrate

    if not hasattr(scipy.integrate, "simps"):
        scipy.integrate.simps = scipy.integrate.simpson
    import pycox.models

    return pycox.models


def validation_split(event: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Event-stratified (train, validation) index arrays; validation gets >= 1 event when it can."""
    rng = np.random.default_rng(seed)
    tr, va = [], []
    for stratum in (np.flatnonzero(event), np.flatnonzero(~event)):
        perm = rng.permutation(stratum)
        k = int(round(fraction * len(perm)))
        va.append(perm[:k])
        tr.append(perm[k:])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(va))


def fit_net(X: np.ndarray, time: np.ndarray, event: np.ndarray, *, hidden: tuple[int, ...], dropout: float,
            batch_norm: bool, activation: str, lr: float, weight_decay: float, epochs: int, batch_size: int,
            val_fraction: float, patience: int, seed: int):
    """Train one DeepSurv network; returns the torch module in eval mode.

    X (n, p) float; time (n,) days; event (n,) bool. Early stopping on the validation partial
    likelihood when val_fraction > 0 and the validation part has an event.
    """
    import torch
    import torchtuples as tt

    models = pycox_models()
    torch.manual_seed(seed)
    np.random.seed(seed)
    act = {"relu": torch.nn.ReLU, "selu": torch.nn.SELU, "elu": torch.nn.ELU}[activation]
    net = tt.practical.MLPVanilla(X.shape[1], list(hidden), 1, batch_norm=batch_norm, dropout=dropout or None,
                                  activation=act, output_bias=False)
    model = models.CoxPH(net, tt.optim.Adam(lr=lr, weight_decay=weight_decay))
    Xf = X.astype(np.float32)
    target = (time.astype(np.float32), event.astype(np.float32))
    tr, va = (np.arange(len(time)), np.array([], dtype=int))
    if val_fraction > 0:
        tr, va = validation_split(event, val_fraction, seed)
    if len(va) and event[va].sum() > 0 and event[tr].sum() > 0:
        import tempfile

        # torchtuples checkpoints the best weights to a file, by default in the working directory
        with tempfile.TemporaryDirectory(prefix="facesurv-deepsurv-") as tmp:
            callbacks = [tt.callbacks.EarlyStopping(patience=patience, file_path=f"{tmp}/best.pt")]
            val = (Xf[va], (target[0][va], target[1][va]))
            model.fit(Xf[tr], (target[0][tr], target[1][tr]), batch_size=min(batch_size, len(tr)), epochs=epochs,
                      callbacks=callbacks, verbose=False, val_data=val, val_batch_size=len(va))
    else:
        model.fit(Xf, target, batch_size=min(batch_size, len(time)), epochs=epochs, verbose=False)
    net.eval()
    return net


def net_log_risk(net, X: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = net(torch.as_tensor(X, dtype=torch.float32)).numpy().ravel().astype(np.float64)
    if not np.isfinite(out).all():
        raise DataError("deepsurv: the network produced non-finite risks; lower training.deepsurv_lr")
    return out


class DeepSurvModel(SurvivalModel):
    kind = "deepsurv"

    def __init__(self, preprocessor: Preprocessor, *, hidden: tuple[int, ...], dropout: float, lr: float,
                 weight_decay: float, epochs: int, batch_size: int, val_fraction: float, patience: int,
                 batch_norm: bool = True, activation: str = "relu", seed: int = 0) -> None:
        super().__init__(preprocessor, seed=seed)
        self.needs_latent = preprocessor.use_latent
        self.config: dict[str, Any] = dict(hidden=tuple(hidden), dropout=dropout, lr=lr, weight_decay=weight_decay, epochs=epochs,
                           batch_size=batch_size, val_fraction=val_fraction, patience=patience,
                           batch_norm=batch_norm, activation=activation)
        self.net_ = None

    def _fit_matrix(self, X: np.ndarray, time: np.ndarray, event: np.ndarray) -> None:
        if len(time) < 4:
            raise DataError(f"deepsurv: {len(time)} training patients are too few for a network; need at least 4")
        self.net_ = fit_net(X, time, event, seed=self.seed, **self.config)

    def _log_risk_matrix(self, X: np.ndarray) -> np.ndarray:
        return net_log_risk(self.net_, X)
