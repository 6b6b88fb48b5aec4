#!/bin/sh
# Starts the MLflow server with basic auth. Secrets come as environment variables (Kubernetes) or
# as files in /run/secrets (compose); none is ever on a command line.
set -eu
secret() {  # secret VAR FILE: $VAR if set, else the content of /run/secrets/FILE
    eval "value=\${$1:-}"
    if [ -z "$value" ]; then value=$(cat "/run/secrets/$2"); fi
    printf %s "$value"
}
PGPASSWORD=$(secret PGPASSWORD postgres_password)
AWS_ACCESS_KEY_ID=$(secret AWS_ACCESS_KEY_ID minio_root_user)
AWS_SECRET_ACCESS_KEY=$(secret AWS_SECRET_ACCESS_KEY minio_root_password)
MLFLOW_AUTH_ADMIN_PASSWORD=$(secret MLFLOW_AUTH_ADMIN_PASSWORD mlflow_admin_password)
MLFLOW_FLASK_SERVER_SECRET_KEY=$(secret MLFLOW_FLASK_SERVER_SECRET_KEY mlflow_secret_key)
export PGPASSWORD AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY MLFLOW_AUTH_ADMIN_PASSWORD MLFLOW_FLASK_SERVER_SECRET_KEY
# The artifact bucket, created once.
python - <<'PY'
import os

import boto3

s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
bucket = os.environ.get("ARTIFACT_BUCKET", "mlflow")
if bucket not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket=bucket)
PY
# MLflow 3's job runner off unless set (asha-tune runs none of its jobs; off, the server is about
# half the processes and memory): asha_tune.tracking.client.SERVER_ENVIRON, as `cluster up` does.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
exec mlflow server --app-name basic-auth "$@"
