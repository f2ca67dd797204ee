# Airflow 3 with pgferry installed from this repository (the provider registers itself).
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root pyproject.toml README.md /opt/pgferry/
COPY --chown=airflow:root src /opt/pgferry/src
# Pinning apache-airflow keeps pip from upgrading the image's own Airflow.
RUN pip install --no-cache-dir "apache-airflow==3.3.2" "/opt/pgferry[airflow]"
