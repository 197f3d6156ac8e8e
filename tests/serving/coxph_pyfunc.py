"""A small real champion for the serving tests and the load benchmark: a scikit-survival
CoxPH fit, served as an MLflow pyfunc (logged as "models from code": MLflow copies this
file, no pickled class). Its fitted numbers are plain JSON (artifacts["estimator"]), so
loading it runs no code from the artifact store beyond this file, whose hash is checked first.

Output columns follow the training contract: risk_score, risk_percentile, survival_<h>d.
predict is vectorised (S(h | x) = S0(h) ** exp(x . beta), the Breslow baseline of the fit)
so that serving measurements are not dominated by a slow test model.
"""

import json

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class CoxPHRisk(PythonModel):
    def load_context(self, context):
        with open(context.artifacts["estimator"], encoding="utf-8") as fh:
            state = json.load(fh)
        self.coef = np.asarray(state["coef"], dtype=float)
        self.columns = list(state["columns"])
        self.train_risk = np.sort(np.asarray(state["train_risk"], dtype=float))
        self.horizons = [int(h) for h in state["horizons"]]
        self.s0 = {int(h): float(s) for h, s in state["baseline_survival"].items()}

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
