#!/usr/bin/env bash
# Installs the evaluation's Python requirements into eval/.venv-target (pip --target, no venv module needed) and
# OSMesa for MuJoCo's CPU offscreen rendering (EGL does not work on machines without a GPU driver).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if ! ldconfig -p | grep -q libOSMesa; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq libosmesa6 || { $sudo apt-get update -qq && $sudo apt-get install -y -qq libosmesa6; }
fi
PIP_RETRIES="${PIP_RETRIES:-0}" PIP_TIMEOUT="${PIP_TIMEOUT:-5}" \
  python3 -m pip install --quiet --upgrade --target "$here/.venv-target" -r "$here/requirements.txt"
PYTHONPATH="$here/.venv-target" MUJOCO_GL=osmesa python3 -c "import mujoco, h5py, msgpack, websockets, PIL; print('eval requirements OK: mujoco', mujoco.__version__)"
