#!/usr/bin/env bash
# Create .venv-triton: the Triton side of bench/serving_vs_triton.py.
#
#   bash bench/setup_triton.sh          # idempotent: a second run only re-checks
#
# It holds, pinned:
#   - nvidia-pytriton 0.7.0: embeds Triton Inference Server 2.51.0 (tritonserver binary,
#     python backend, one backend stub per Python 3.8-3.13). 0.5.13, 0.5.14, 0.6.0 and
#     0.7.0 all embed 2.51.0 (pytriton CHANGELOG); 0.7.0 is the newest of them.
#   - tritonclient[http] 2.51.0: its manylinux wheel carries the perf_analyzer binary
#     (installed as .venv-triton/bin/perf_analyzer).
#   - nvidia-cuda-runtime-cu12 12.6.77: only libcudart.so.12, which perf_analyzer links
#     against even on a CPU-only machine (it never touches a GPU unless asked for CUDA
#     shared memory). Run perf_analyzer with LD_LIBRARY_PATH pointing at
#     .venv-triton/lib/python3.X/site-packages/nvidia/cuda_runtime/lib (serving_vs_triton.py
#     does); it is not on the default library path, so nothing else picks it up.
#   - onnxruntime: the same version as .venv (edge-service), so both servers run the
#     same engine. numpy < 2 because tritonclient 2.51 and pytriton require it.
#
# System libraries (Debian 12 / Ubuntu 22.04+; glibc >= 2.35 for the pytriton wheel):
#   - libb64-0d: perf_analyzer needs libb64.so.0d. Installed here through apt-get when it
#     is missing (as root, or through sudo), like the Makefile does for the data set.
#   - the Python backend stub (python_backend_stubs/3.X) links libpython3.X.so.1.0, so the
#     interpreter must have a shared libpython: Debian's python3.X (libpython3.X package)
#     or pyenv built with --enable-shared (as here). bench/triton_server.py puts the
#     interpreter's own LIBDIR first on LD_LIBRARY_PATH: with pyenv 3.11.7, the stub would
#     otherwise load Debian's libpython3.11 (3.11.2) under the 3.11.7 stdlib and fail.
#   pytriton bundles everything else (libtritonserver, curl, ssl, ...).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TRITON_VENV:-$ROOT/.venv-triton}"
MAIN_VENV="${MAIN_VENV:-$ROOT/.venv}"

PYTRITON_VERSION=0.7.0
TRITONCLIENT_VERSION=2.51.0
NUMPY_VERSION=1.26.4
CUDART_VERSION=12.6.77
# Same onnxruntime as edge-service's venv when it exists; else this pin.
ORT_VERSION=1.32.0
if [ -x "$MAIN_VENV/bin/python" ]; then
  v="$("$MAIN_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("onnxruntime"))' 2>/dev/null || true)"
  [ -n "$v" ] && ORT_VERSION="$v"
fi

# The interpreter: the one behind .venv (same Python as edge-service), else python3.
if [ -z "${PYTHON:-}" ]; then
  if [ -f "$MAIN_VENV/pyvenv.cfg" ]; then
    PYTHON="$(sed -n 's/^executable *= *//p' "$MAIN_VENV/pyvenv.cfg")"
  fi
  PYTHON="${PYTHON:-python3}"
fi

REQS=(
  "nvidia-pytriton==$PYTRITON_VERSION"
  "tritonclient[http]==$TRITONCLIENT_VERSION"
  "onnxruntime==$ORT_VERSION"
  "numpy==$NUMPY_VERSION"
  "nvidia-cuda-runtime-cu12==$CUDART_VERSION"
)
# Transitive dependencies pinned too (a pip freeze of a working install, minus the above).
CONSTRAINTS="$ROOT/bench/triton-constraints.txt"
STAMP="$VENV/.installed"
WANT="$(printf '%s\n' "${REQS[@]}"; cat "$CONSTRAINTS")"

if ! ldconfig -p | grep -q 'libb64.so.0d'; then
  SUDO="$([ "$(id -u)" = 0 ] || echo sudo)"
  echo "installing Debian's libb64-0d (perf_analyzer needs libb64.so.0d)"
  $SUDO apt-get update -q && $SUDO apt-get install -y -q libb64-0d
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "installing: ${REQS[*]}"
  "$VENV/bin/pip" install -q -c "$CONSTRAINTS" "${REQS[@]}"
  printf '%s\n' "$WANT" >"$STAMP"
else
  echo "$VENV is up to date (${REQS[*]})"
fi

# Checks: versions, and that the three binaries find their shared libraries.
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as m

for pkg in ("nvidia-pytriton", "tritonclient", "onnxruntime", "numpy", "nvidia-cuda-runtime-cu12"):
    print(f"{pkg}=={m.version(pkg)}")
EOF
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
export LD_LIBRARY_PATH="$SITE/nvidia/cuda_runtime/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
missing=0
PYVER="$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
PYLIB="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')"
export LD_LIBRARY_PATH="$PYLIB:$LD_LIBRARY_PATH"
for bin in "$SITE/pytriton/tritonserver/bin/tritonserver" \
           "$SITE/pytriton/tritonserver/python_backend_stubs/$PYVER/triton_python_backend_stub" \
           "$VENV/bin/perf_analyzer"; do
  if ldd "$bin" | grep -q "not found"; then
    echo "missing shared libraries for $bin:" >&2
    ldd "$bin" | grep "not found" >&2
    missing=1
  fi
done
if [ "$missing" = 1 ]; then
  echo "install them (libpython$PYVER.so: apt-get install -y libpython$PYVER, or a Python built" >&2
  echo "with --enable-shared)" >&2
  exit 1
fi
"$VENV/bin/perf_analyzer" --version 2>&1 | grep -m1 Version || true
echo "ok: $VENV"
