"""MLflow's client credentials: the environment, else ~/.mlflow/credentials (MLflow's own file,
which its client reads), created with a new password when missing."""

from __future__ import annotations

import configparser
import getpass
import os
import secrets
from pathlib import Path

from asha_tune.files import write_private


def _file() -> Path:
    return Path.home() / ".mlflow" / "credentials"


def _read(path: Path) -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    if path.is_file():
        config.read(path)
    return config


def client_credentials() -> tuple[str, str] | None:
    """The credentials MLflow's client sends, as it finds them (env, else ~/.mlflow/credentials),
    or None: read only, nothing created (a reader of the records: tracking/reader.py)."""
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return user, password
    config = _read(_file())
    section = config["mlflow"] if config.has_section("mlflow") else None
    if section and section.get("mlflow_tracking_username") and section.get("mlflow_tracking_password"):
        return section["mlflow_tracking_username"], section["mlflow_tracking_password"]
    return None


def mlflow_credentials() -> tuple[str, str]:
    """MLflow's client credentials (env, else ~/.mlflow/credentials, created if missing)."""
    found = client_credentials()
    if found is not None:
        return found
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    path = _file()
    config = _read(path)
    if not config.has_section("mlflow"):
        config.add_section("mlflow")
    config["mlflow"]["mlflow_tracking_username"] = user or getpass.getuser()
    config["mlflow"]["mlflow_tracking_password"] = secrets.token_urlsafe(18)
    lines = []
    for name in config.sections():
        lines.append(f"[{name}]")
        lines += [f"{key} = {value}" for key, value in config[name].items()]
    write_private(path, "\n".join(lines) + "\n")
    return config["mlflow"]["mlflow_tracking_username"], config["mlflow"]["mlflow_tracking_password"]
