#!/usr/bin/env bash
# Set up nairbus on this machine: Debian packages (mosquitto, mosquitto-clients, dataset-fashion-mnist) when
# missing, then a virtual environment in .venv with nairbus, the hub extra (torch), the camera extra and the test
# tools: everything, for development. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need+=(mosquitto-clients)
data_dir="${NAIRBUS_DATA_DIR:-/usr/share/datasets/fashion-mnist}"
[ -f "$data_dir/t10k-images-idx3-ubyte.gz" ] || [ -f "$data_dir/t10k-images-idx3-ubyte" ] || need+=(dataset-fashion-mnist)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ${need[*]} from Debian" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: missing Debian packages: ${need[*]}" >&2
    echo "       install them with: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
fi

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: nairbus needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$python" -m venv .venv
fi
stamp=.venv/.nairbus-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing nairbus into .venv (torch 2.13.0 CPU build)" >&2
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" >&2 || true
  # The build backend's notes (an editable install's caveat) are not the user's to act on.
  PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q -e '.[hub,test,camera]' 2>&1 | grep -v "^WARNING: Location" >&2 || true
  .venv/bin/python -c 'import torch, onnxruntime, onnx, matplotlib, paho.mqtt, nairbus.agents.cli' || { echo "setup: installation failed" >&2; exit 1; }
  touch "$stamp"
fi
