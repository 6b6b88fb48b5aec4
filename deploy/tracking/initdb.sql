-- Run once by the postgres image on an empty data folder (POSTGRES_DB creates `mlflow`).
-- mlflow_auth: MLflow's users and permissions; optuna: the sweeps' studies (--study-url).
CREATE DATABASE mlflow_auth;
CREATE DATABASE optuna;
