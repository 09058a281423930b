# edge-service, CPU image (x86_64 / arm64). The Jetson (L4T / JetPack 6) image and the fleet
# manifests come with the deploy issue; this one serves the default family with ONNX Runtime.
#
#   docker build -t edge-service:cpu .
#   docker run --rm -p 8080:8080 edge-service:cpu
#
# Stage 1 builds the engines from the committed weights (needs torch); stage 2 serves them
# with the runtime alone (no torch), as the design requires.

ARG PYTHON=3.11
FROM python:${PYTHON}-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edge_service ./edge_service
COPY models ./models
COPY calibration ./calibration
# The CPU wheel index keeps torch from pulling the CUDA packages.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir '.[train]'
ENV EDGE_ENGINES_DIR=/engines
RUN edge-service build --weights models/fashion/base.pt --calibration calibration/fashion

FROM python:${PYTHON}-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY edge_service ./edge_service
RUN pip install --no-cache-dir . && rm -rf /app/edge_service
COPY --from=build /engines /app/engines
ENV EDGE_ENGINES_DIR=/app/engines \
    EDGE_HOST=0.0.0.0 \
    EDGE_ALLOW_REMOTE=true \
    EDGE_PORT=8080
USER nobody
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/v2/health/ready').status != 200)"
CMD ["edge-service", "serve"]
