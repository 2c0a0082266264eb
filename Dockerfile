# One image for the three Funnel Message processes:
#   api               funnel api --host 0.0.0.0 --port 8000 (the default CMD): granian with
#                     API_WORKERS workers (default one per CPU), metrics aggregated across them
#   dagster-webserver dagster-webserver -h 0.0.0.0 -p 3000 -w /app/workspace.yaml
#   dagster-daemon    dagster-daemon run -w /app/workspace.yaml
# Build: docker build -t funnel-message .   (docker-compose.yml builds it for every service)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/home \
    FUNNEL_SQL_DIR=/app/sql

WORKDIR /app

# 1) Dependencies only, in their own layer: rebuilt when pyproject.toml changes, not on every
#    code edit. Empty package stubs let `pip install .` resolve the project's dependencies.
COPY pyproject.toml README.md ./
RUN mkdir -p funnel_ingest funnel_dagster \
    && touch funnel_ingest/__init__.py funnel_dagster/__init__.py \
    && pip install . \
    && pip uninstall -y funnel-message \
    && rm -rf funnel_ingest funnel_dagster build ./*.egg-info

# 2) The project itself.
COPY funnel_ingest/ funnel_ingest/
COPY funnel_dagster/ funnel_dagster/
COPY sql/ sql/
COPY dagster.yaml workspace.yaml ./
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info

# 3) Non-root user; DAGSTER_HOME holds dagster.yaml and the local artifact / compute-log storage
#    (docker-compose.yml mounts a volume on $DAGSTER_HOME/storage, initialised from this dir).
RUN groupadd --system --gid 10001 funnel \
    && useradd --system --uid 10001 --gid funnel --create-home --home-dir /home/funnel \
       --shell /usr/sbin/nologin funnel \
    && mkdir -p "$DAGSTER_HOME/storage" \
    && cp /app/dagster.yaml "$DAGSTER_HOME/dagster.yaml" \
    && chown -R funnel:funnel "$DAGSTER_HOME"

USER funnel

EXPOSE 8000 3000

CMD ["funnel", "api", "--host", "0.0.0.0", "--port", "8000"]
