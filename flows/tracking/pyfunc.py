"""MLflow "model from code": the pyfunc that serves a fine-tuned model from safetensors.

Logged by path (never pickled); its artifact ``model`` is the self-describing model directory.
"""

from __future__ import annotations

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class RecraftModel(PythonModel):
    """Input: raw float32 inputs (N, C, L) or (N, C, H, W), as a user holds them; the model
    normalises them as its training data was. Output: a dict of arrays
    (:class:`components.serving.RawInputModel`): ``predictions``, ``labels`` and ``scores``
    (probabilities) for classifiers; ``predictions`` in the targets' units for regression and fields."""

    def load_context(self, context) -> None:
        from components.serving import RawInputModel

        self.model = RawInputModel(context.artifacts["model"])

    def predict(self, context, model_input, params=None) -> dict[str, np.ndarray]:
        return self.model.predict(np.asarray(model_input, dtype=np.float32))


mlflow.models.set_model(RecraftModel())
