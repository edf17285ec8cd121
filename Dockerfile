# One image for every mangasync service: Dagster code location, webserver, daemon, each run's
# container, and the notification server. docker-compose.yml picks the command.
# For Kubernetes (deploy/helm/): docker build --build-arg EXTRAS=k8s -t REGISTRY/mangasync:TAG .
FROM python:3.11-slim

# Optional extras of pyproject.toml: `k8s` adds the Kubernetes run launcher.
ARG EXTRAS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home

WORKDIR /opt/dagster/app

# Dependencies first, at the exact versions of requirements.lock (what scripts/test.sh tests),
# so that a code or README change does not reinstall them: the package's metadata needs a
# README, and an empty one does here. The stand-in package's build/ goes too: setuptools would
# otherwise keep its empty __init__.py over the real one, which is not newer.
COPY pyproject.toml requirements.lock ./
RUN mkdir -p mangasync_pipeline && touch mangasync_pipeline/__init__.py README.md \
    && pip install --constraint requirements.lock ".${EXTRAS:+[$EXTRAS]}" \
    && pip uninstall -y mangasync && rm -rf build mangasync.egg-info

COPY README.md ./
COPY mangasync_pipeline ./mangasync_pipeline
RUN pip install --no-deps .

COPY docker/dagster.yaml ${DAGSTER_HOME}/dagster.yaml
COPY docker/workspace.yaml ./workspace.yaml

RUN useradd --system --uid 10001 --home-dir /opt/dagster mangasync \
    && mkdir -p ${DAGSTER_HOME}/storage /var/lib/mangasync \
    && chown -R mangasync ${DAGSTER_HOME} /var/lib/mangasync \
    && chmod 0700 /var/lib/mangasync
USER mangasync

EXPOSE 3000 4000 8085 9091/udp
CMD ["mangasync", "--help"]
