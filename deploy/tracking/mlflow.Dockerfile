# The tracking side's image: the MLflow server with its basic-auth app, on PostgreSQL, with
# artifacts in S3-compatible storage; optuna-dashboard for the studies in the same PostgreSQL.
#   docker build -f deploy/tracking/mlflow.Dockerfile -t REGISTRY/asha-tune-tracking:3.17.2 deploy/tracking
FROM python:3.11-slim
RUN pip install --no-cache-dir "mlflow[auth]==3.17.2" "psycopg[binary]==3.3.9" "boto3==1.44.5" \
        "optuna==5.0.0" "optuna-dashboard==0.21.0"
COPY mlflow-entrypoint.sh /usr/local/bin/mlflow-entrypoint.sh
RUN chmod 755 /usr/local/bin/mlflow-entrypoint.sh
USER nobody
ENTRYPOINT ["/usr/local/bin/mlflow-entrypoint.sh"]
