"""Penalised Cox (elastic net) on StyleGAN latents; its coefficients are the health attribute.

512 latent dimensions against a few hundred events need a penalty. The penalty strength is
chosen by seeded K-fold cross-validation of Harrell's C along the regularisation path. The
coefficient vector, mapped back to the raw latent scale, is the direction in latent space
along which predicted risk rises fastest per unit of latent: editing a face along minus
that direction makes it look "healthier" to the model.
"""

from __future__ import annotations

import numpy as np

from ground.errors import DataError
from training.base import SurvivalModel
from training.preprocess import Preprocessor


class CoxnetModel(SurvivalModel):
    kind = "coxnet"
    needs_latent = True

    def __init__(self, preprocessor: Preprocessor, *, l1_ratio: float, alpha_min_ratio: float,
                 folds: int, seed: int = 0, n_alphas: int = 30) -> None:
        super().__init__(preprocessor, seed=seed)
        self.l1_ratio = l1_ratio
        self.alpha_min_ratio = alpha_min_ratio
        self.folds = folds
        self.n_alphas = n_alphas
        self.alpha_: float | None = None
        self.coef_: np.ndarray | None = None
        self.cv_scores_: np.ndarray | None = None

    def _path(self, X, y, alphas=None):
        from sksurv.linear_model import CoxnetSurvivalAnalysis

        est = CoxnetSurvivalAnalysis(l1_ratio=self.l1_ratio, alpha_min_ratio=self.alpha_min_ratio,
                                     n_alphas=self.n_alphas, alphas=alphas, normalize=False, max_iter=100000)
        try:
            return est.fit(X, y)
        except (ArithmeticError, ValueError) as exc:
            raise DataError(f"coxnet: the elastic-net path failed ({str(exc).splitlines()[0]}); "
                            "raise training.coxnet_alpha_min_ratio") from None

    def _fit_matrix(self, X: np.ndarray, time: np.ndarray, event: np.ndarray) -> None:
        from sklearn.model_selection import StratifiedKFold
        from sksurv.metrics import concordance_index_censored
        from sksurv.util import Surv

        y = Surv.from_arrays(event, time)
        full = self._path(X, y)
        alphas = np.asarray(full.alphas_)
        folds = min(self.folds, int(event.sum()), int((~event).sum()) or self.folds)
        scores = np.full((max(folds, 1), len(alphas)), np.nan)
        if folds >= 2:
            skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.seed)
            for k, (tr, va) in enumerate(skf.split(X, event)):
                est = self._path(X[tr], y[tr], alphas=alphas)
                if event[va].sum() == 0:
                    continue
                for j in range(len(est.alphas_)):
                    risk = X[va] @ est.coef_[:, j]
                    if np.ptp(risk) == 0:
                        scores[k, j] = 0.5
                        continue
                    scores[k, j] = concordance_index_censored(event[va], time[va], risk)[0]
        mean = np.nanmean(scores, axis=0) if np.isfinite(scores).any() else np.full(len(alphas), 0.5)
        best = int(np.nanargmax(mean))
        self.cv_scores_ = mean
        self.alpha_ = float(alphas[best])
        self.coef_ = np.asarray(full.coef_[:, best], dtype=np.float64)

    def _log_risk_matrix(self, X: np.ndarray) -> np.ndarray:
        return X @ self.coef_

    @property
    def health_direction(self) -> np.ndarray:
        """(d,) risk-increasing direction on the raw latent scale (d = latent dimension).

        risk(z) = sum_j coef_j (z_j - mean_j) / scale_j, so d risk / d z = coef / scale.
        """
        if self.coef_ is None:
            raise self._not_fitted()
        p = self.preprocessor
        n_num = len(p.numeric)
        return self.coef_[n_num:n_num + p.latent_dim_] / p.scales_[n_num:n_num + p.latent_dim_]

    def describe(self):
        d = super().describe()
        d.update(alpha=self.alpha_, nonzero=int(np.count_nonzero(self.coef_)))
        return d
