# syntax=docker/dockerfile:1
# The operator image: kopf handlers + the Dapr workflow worker in one process; daprd runs beside it as a sidecar.
FROM python:3.11.7-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m venv /opt/steadfast \
 && /opt/steadfast/bin/pip install --no-cache-dir .

FROM python:3.11.7-slim-bookworm
RUN groupadd --system --gid 65532 steadfast \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin steadfast
COPY --from=build /opt/steadfast /opt/steadfast
ENV PATH=/opt/steadfast/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["steadfast"]
CMD ["run", "--all-namespaces"]
