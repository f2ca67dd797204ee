# Dagster webserver and daemon with pgferry installed from this repository.
FROM python:3.11-slim-bookworm
COPY pyproject.toml README.md /opt/pgferry/
COPY src /opt/pgferry/src
# dagster and dagster-webserver pinned to the same release: the webserver must match.
RUN pip install --no-cache-dir "/opt/pgferry[dagster]" "dagster==1.13.27" \
        "dagster-webserver==1.13.27" "dagster-postgres==0.29.27"
WORKDIR /opt/dagster/app
ENV DAGSTER_HOME=/opt/dagster/home
RUN mkdir -p "$DAGSTER_HOME"
