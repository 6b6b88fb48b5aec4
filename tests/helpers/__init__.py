"""What tests share: synthetic data and tiny configurations (data), processes a test started
(processes), sweep spaces and records (sweeps), MLflow pages (mlflow), headless Chromium (browser),
the names docs and docstrings point at (names).
A plain package: tests import from it; fixtures live in conftest.py."""
