"""A small real champion for the serving tests and the load benchmark: a scikit-survival
CoxPH fit, served as an MLflow pyfunc (logged as "models from code": MLflow copies this
file, no pickled class).

Output columns follow the training contract: risk_score, risk_percentile, survival_<h>d.
predict is vectorised (S(h | x) = S0(h) ** exp(x . beta), the Breslow baseline of the fit)
so that serving measurements are not dominated by a slow test model.
"""

import pickle

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class CoxPHRisk(PythonModel):
    def load_context(self, context):
        with open(context.artifacts["estimator"], "rb") as fh:
            state = pickle.load(fh)
        est = state["estimator"]
        self.coef = np.asarray(est.coef_, dtype=float)
        self.columns = state["columns"]
        self.train_risk = np.sort(np.asarray(state["train_risk"], dtype=float))
        self.horizons = state["horizons"]
        s0 = est._baseline_model.baseline_survival_
        self.s0 = {h: float(s0(min(h, s0.domain[1]))) for h in self.horizons}

    def predict(self, context, model_input, params=None):
        X = model_input[self.columns].to_numpy(dtype=float)
        risk = X @ self.coef
        out = {"risk_score": risk,
               "risk_percentile": 100.0 * np.searchsorted(self.train_risk, risk, side="right") / len(self.train_risk)}
        hazard = np.exp(risk)
        for h in self.horizons:
            out[f"survival_{h}d"] = self.s0[h] ** hazard
        return pd.DataFrame(out)


mlflow.models.set_model(CoxPHRisk())
