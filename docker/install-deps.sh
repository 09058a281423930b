#!/bin/sh
# Installs edge-service's dependencies into /opt/venv from pyproject.toml alone, so that
# this layer is cached until the dependencies change (the source is copied after it).
#
#   EXTRAS       pyproject extras: "train" (torch, for `edge-service build` from the
#                committed weights), "jetson" (pycuda, jetson-stats), or none ("")
#   TORCH        the torch requirement (pinned: see the Makefile)
#   TORCH_INDEX  where torch comes from: the CPU wheels, so no CUDA packages are pulled
#                (export runs on the CPU; TensorRT, not torch, uses the Jetson's GPU)
#   JTOP_VERSION jetson-stats version: must equal the host's `jtop -v` (the client and
#                the jtop service refuse each other otherwise); empty: the newest
set -eu
: "${EXTRAS=train}" "${TORCH:=torch==2.13.0}"
: "${TORCH_INDEX:=https://download.pytorch.org/whl/cpu}" "${JTOP_VERSION:=}"

has_extra() {
    case ",$EXTRAS," in *",$1,"*) return 0 ;; esac
    return 1
}

# What the base lacks: the L4T images have python3 but neither venv nor pip; pycuda has no
# aarch64 wheel and compiles against the CUDA headers that l4t-jetpack ships.
packages=""
python3 -c 'import ensurepip, venv' 2>/dev/null || packages="python3-venv python3-pip"
if has_extra jetson; then
    packages="$packages python3-dev build-essential"
fi
if [ -n "$packages" ]; then
    apt-get update
    # shellcheck disable=SC2086  # a list of package names
    apt-get install -y --no-install-recommends $packages
    rm -rf /var/lib/apt/lists/*
fi

# JetPack installs TensorRT's Python bindings as a system package: let the venv see them.
site=""
if python3 -c 'import tensorrt' 2>/dev/null; then
    site="--system-site-packages"
fi
python3 -m venv $site /opt/venv
pip="/opt/venv/bin/pip install --no-cache-dir"
$pip --upgrade pip "setuptools>=77" wheel
if has_extra train; then
    $pip "$TORCH" --index-url "$TORCH_INDEX"
else
    # any build needs onnx (INT8 quantization, TensorRT's Q/DQ check), even --from-onnx
    $pip "onnx>=1.16"
fi
if has_extra jetson && [ -n "$JTOP_VERSION" ]; then
    $pip "jetson-stats==$JTOP_VERSION"
fi

# A stub package: pip resolves and installs the dependencies of pyproject.toml, then the
# stub goes; the real package is installed (editable, --no-deps) once the source is copied.
mkdir -p edge_service
touch edge_service/__init__.py
$pip ".${EXTRAS:+[$EXTRAS]}"
/opt/venv/bin/pip uninstall -y edge-service
rm -rf edge_service build ./*.egg-info
