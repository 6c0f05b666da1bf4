#!/usr/bin/env bash
# Set up tpRNA in ./.venv on a fresh machine: the right torch and onnxruntime builds for it,
# then the package (editable) with its test tools.  Safe to re-run.
#
#   No GPU (no working nvidia-smi): torch==2.13.0, the CPU build (on PyPI for Linux the plain
#     wheel is CUDA; set TPRNA_TORCH_INDEX to a CPU wheel index where no local CPU wheel is
#     found), and onnxruntime.
#   GPU: the default CUDA build of torch and onnxruntime-gpu (the two onnxruntime packages
#     cannot be installed side by side, so the other one is removed first).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip >/dev/null 2>&1 || true

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: GPU found: CUDA torch, onnxruntime-gpu"
    "${pip[@]}" uninstall -y onnxruntime >/dev/null 2>&1 || true
    "${pip[@]}" install "torch>=2.3"
    "${pip[@]}" install -e ".[gpu,test]"
else
    echo "setup: no GPU: CPU torch 2.13.0, onnxruntime"
    "${pip[@]}" uninstall -y onnxruntime-gpu >/dev/null 2>&1 || true
    "${pip[@]}" install "torch==2.13.0" ${TPRNA_TORCH_INDEX:+--index-url "$TPRNA_TORCH_INDEX"}
    "${pip[@]}" install -e ".[cpu,test]"
fi
.venv/bin/python -c "import torch, onnxruntime, tprna; print('setup: tprna', tprna.__version__, '| torch', torch.__version__, '| onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())"
