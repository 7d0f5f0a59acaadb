#!/usr/bin/env bash
# Set up everything on a fresh Debian machine: system libraries for Qt/OpenGL under Xvfb, a venv, the package.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v apt-get >/dev/null 2>&1 && ! command -v xvfb-run >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    xvfb xauth libgl1 libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0 libxcb-cursor0 \
    libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 \
    libxcb-xinerama0 libxcb-xfixes0 libxcb-xkb1 libdbus-1-3 libfontconfig1 libxkbcommon0 >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -U pip
# CPU wheel of torch (a plain "torch" would pull several GB of CUDA libraries)
.venv/bin/python -m pip install -q "torch==2.13.0" || .venv/bin/python -m pip install -q torch \
  --index-url https://download.pytorch.org/whl/cpu
.venv/bin/python -m pip install -q -e ".[dev,onnx,bioimageio]"
