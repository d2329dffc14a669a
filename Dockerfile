# syntax=docker/dockerfile:1
# The operator image: kopf handlers + the Dapr workflow worker in one process; daprd runs beside it as a sidecar.
# Build: docker build -t steadfast:dev .   Lint (no Docker engine needed): make lint (hadolint).
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# Build stage: a virtualenv with the package installed exactly as CI installs it (`pip install .` from
# pyproject.toml, whose runtime dependencies are pinned); compilers and caches stay here.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
COPY pyproject.toml README.md ./
COPY operator ./operator
# The development tools (steadfast/dev: control plane, daprd unit, demo) and the local engine (steadfast_engine)
# are not part of the operator: the runtime never imports them (import contracts in pyproject.toml), so they are
# left out of the source before the build and the installed package's file list holds only what ships.
RUN rm -rf operator/steadfast/dev operator/steadfast_engine \
 && python -m venv /opt/steadfast \
 && /opt/steadfast/bin/pip install --no-cache-dir . \
 && /opt/steadfast/bin/pip uninstall --yes pip

# Runtime stage: the same base (the venv's interpreter links to it), the venv, a non-root user, nothing else.
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="steadfast" \
      org.opencontainers.image.description="Durable sagas, health monitors and approvals as Kubernetes resources" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 65532 steadfast \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin steadfast
COPY --from=build /opt/steadfast /opt/steadfast
# No .pyc writes at run time: the chart mounts the root filesystem read-only (pip compiled them at build).
# MALLOC_ARENA_MAX: the operator runs ~50 threads; one malloc arena per thread inflates RSS for nothing.
ENV PATH=/opt/steadfast/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 MALLOC_ARENA_MAX=2
# Numeric, so that Kubernetes' runAsNonRoot can verify it without a passwd lookup.
USER 65532:65532
# 8080: kopf's liveness endpoint (--liveness); 9443: the admission webhooks.
EXPOSE 8080 9443
ENTRYPOINT ["steadfast"]
CMD ["run", "--all-namespaces", "--liveness", "http://0.0.0.0:8080/healthz"]
