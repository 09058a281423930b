# syntax=docker/dockerfile:1
# edge-service: one Dockerfile, two bases (docs/fleet.md has the whole story).
#
#   CPU, x86_64 or arm64 (ONNX Runtime):
#     docker build -t edge-service:cpu .
#   Jetson, JetPack 6 = L4T r36 (TensorRT 10.3, CUDA 12.6), on the board or with
#   `docker buildx build --platform linux/arm64`:
#     docker build -t edge-service:jp6 --build-arg BASE=nvcr.io/nvidia/l4t-jetpack:r36.4.0 \
#       --build-arg EXTRAS=train,jetson .
#
#   docker run -d -p 8080:8080 -v edge-engines:/var/lib/edge-service \
#     -e EDGE_CONTROL_TOKEN="$(openssl rand -hex 24)" edge-service:cpu
#   (add --runtime nvidia on a Jetson; or -e EDGE_CONTROL_ENABLED=false for no control API)
#
# Engines are device-specific (TensorRT plans are tied to the TensorRT version and GPU;
# latencies are measured on the board), so none is baked in: the entrypoint runs
# `edge-service build` on first start into /var/lib/edge-service (a volume) and later
# starts reuse them. The image carries what that build needs: the committed weights, the
# calibration images, the Fashion-MNIST files and, with EXTRAS=train, torch (CPU wheels)
# for the ONNX export. The server itself never imports torch. EXTRAS= (empty) makes a
# serving-only image several hundred MB smaller, for a family built with `--from-onnx`
# on first start (EDGE_BUILD_ARGS) or an engines volume filled beforehand.

ARG BASE=python:3.11-slim-bookworm

# Debian's Fashion-MNIST package (architecture-independent): the build measures accuracy
# on its test split and compares INT8 calibrations on its training split.
FROM --platform=$BUILDPLATFORM debian:bookworm-slim AS data
RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*

# Dependencies only, from pyproject.toml: cached until they change.
FROM ${BASE} AS deps
ARG EXTRAS=train
ARG TORCH=torch==2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG JTOP_VERSION=
ENV PATH=/usr/local/cuda/bin:$PATH
WORKDIR /opt/edge-service
COPY pyproject.toml README.md ./
COPY docker/install-deps.sh /tmp/install-deps.sh
RUN sh /tmp/install-deps.sh

FROM ${BASE} AS runtime
ARG UID=10001
# A system user with the video group (the Jetson's GPU device nodes are root:video).
RUN (getent group video >/dev/null || groupadd --system video) \
 && groupadd --system --gid "$UID" edge \
 && useradd --system --uid "$UID" --gid edge --groups video \
      --home-dir /var/lib/edge-service --shell /usr/sbin/nologin edge \
 && mkdir -p /var/lib/edge-service \
 && chown edge:edge /var/lib/edge-service
COPY --from=deps /opt/venv /opt/venv
COPY --from=data /usr/share/datasets/fashion-mnist /usr/share/datasets/fashion-mnist
WORKDIR /opt/edge-service
COPY pyproject.toml README.md ./
COPY models ./models
COPY calibration/fashion ./calibration/fashion
COPY edge_service ./edge_service
# Editable, like a checkout: models/ and calibration/ sit next to the package, where
# `edge-service build` looks by default, so the entrypoint runs it with no paths.
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation -e . \
 && /opt/venv/bin/python -m compileall -q edge_service
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/edge-entrypoint
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EDGE_HOST=0.0.0.0 \
    EDGE_ALLOW_REMOTE=true \
    EDGE_ENGINES_DIR=/var/lib/edge-service/engines \
    EDGE_CALIBRATION_CACHE=/var/lib/edge-service/calibration-cache
VOLUME /var/lib/edge-service
USER edge
EXPOSE 8080
# The first start builds one engine before the server listens (about a minute; more with
# EDGE_BUILD_ON_START=missing or always, which build the whole family first).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30m --retries=3 \
  CMD ["python3", "-c", "import sys, urllib.request as u; from edge_service.config import Settings; sys.exit(u.urlopen(f'http://127.0.0.1:{Settings().port}/v2/health/ready', timeout=4).status != 200)"]
ENTRYPOINT ["edge-entrypoint"]
CMD ["serve"]
