#!/usr/bin/env bash
# Create .venv and install napari-lsr with its test and Qt extras.
# Without an NVIDIA GPU the CPU build of torch is installed first, so pip never pulls the
# multi-GB CUDA build; with one (or a torch already in the venv) the user's torch stays.
# TORCH_INDEX=https://download.pytorch.org/whl/cpu picks PyTorch's CPU index where reachable.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_CPU_VERSION=${TORCH_CPU_VERSION:-2.13.0}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found: installing torch with CUDA"
    "$VENV/bin/python" -m pip install -q "torch>=2.1,<3"
  elif [ -n "${TORCH_INDEX:-}" ]; then
    echo "setup: no GPU: installing CPU torch from $TORCH_INDEX"
    "$VENV/bin/python" -m pip install -q "torch==$TORCH_CPU_VERSION" --index-url "$TORCH_INDEX"
  else
    echo "setup: no GPU: installing torch==$TORCH_CPU_VERSION (CPU build where the machine has it)"
    "$VENV/bin/python" -m pip install -q "torch==$TORCH_CPU_VERSION"
  fi
fi
"$VENV/bin/python" -m pip install -q -e ".[dev,qt]"
"$VENV/bin/python" -c "import napari_lsr, torch; print('setup: napari-lsr', napari_lsr.__version__, 'torch', torch.__version__)"
