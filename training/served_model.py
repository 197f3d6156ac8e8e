"""The served model's code, logged with MLflow's "models from code" (no cloudpickled wrapper).

MLflow copies this file into every logged model and executes the copy when the model is
loaded. It only hands this project's PrognosisModel class to MLflow; the fitted numbers come
from the saved model directory (training/model_io.py: JSON and safetensors, nothing that runs).
Loaders in facesurv run it only after its sha256 matched the manifest recorded at registration
(training/integrity.py).
"""

# MLflow runs the copy under a generated module name; imported as part of the package (tests,
# tooling, the import-side-effect check) this file registers nothing.
if __name__ != "training.served_model":
    import mlflow

    from training.pyfunc import prognosis_model

    mlflow.models.set_model(prognosis_model())
