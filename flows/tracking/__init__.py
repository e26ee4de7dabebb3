"""Every MLflow call of the project: the run records of a pipeline and its stages
(:mod:`flows.tracking.runs`), the model registry (:mod:`flows.tracking.registry`) and the pyfunc
that serves a registered model (:mod:`flows.tracking.pyfunc`, loaded by MLflow from its path)."""
