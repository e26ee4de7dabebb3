-- One database per store, owned by POSTGRES_USER (the entrypoint runs this as that user, once,
-- on an empty data volume). Credentials stay in the environment, never here.
CREATE DATABASE mlflow;
CREATE DATABASE prefect;
CREATE DATABASE optuna;
