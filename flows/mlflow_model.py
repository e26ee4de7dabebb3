"""MLflow "model from code": the pyfunc that serves a fine-tuned model from safetensors.

Logged by path (never pickled); its artifact ``model`` is the self-describing model directory.
"""

from __future__ import annotations

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class RecraftModel(PythonModel):
    """Input: float32 array (N, C, L) prepared like the training data. Output: logits (N, K)."""

    def load_context(self, context) -> None:
        from components.serving import load_model_dir

        self.model = load_model_dir(context.artifacts["model"])

    def predict(self, context, model_input, params=None) -> np.ndarray:
        from components.serving import predict_array

        return predict_array(self.model, np.asarray(model_input, dtype=np.float32))


mlflow.models.set_model(RecraftModel())
