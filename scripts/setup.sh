#!/usr/bin/env bash
# Set up tpRNA in ./.venv on a fresh machine: the right torch and onnxruntime builds for it,
# then the package (editable) with its training and test tools.  Safe to re-run.
#
#   No GPU (no working nvidia-smi): torch==2.13.0, the CPU build, pinned BEFORE the package
#     so that pip never pulls the CUDA wheel for `torch>=2.3` (on PyPI for Linux the plain
#     wheel is CUDA; set TPRNA_TORCH_INDEX to a CPU wheel index where no local CPU wheel is
#     found), and the base install's onnxruntime.
#   GPU: the default CUDA build of torch and onnxruntime-gpu.
#
# onnxruntime and onnxruntime-gpu install the same `onnxruntime` module and cannot coexist;
# the base install (what `pip install tprna` gives a user, who needs no torch) depends on
# the CPU one.  On a GPU the package is installed with its [gpu] extra (both land), then the
# CPU one is uninstalled — which deletes files the two share — and onnxruntime-gpu is
# force-reinstalled to put them back.  (A later `pip install` that re-resolves tprna's
# dependencies brings onnxruntime back: re-run this script afterwards.)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip >/dev/null 2>&1 || true

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: GPU found: CUDA torch, onnxruntime-gpu"
    "${pip[@]}" install "torch>=2.3"
    "${pip[@]}" install -e ".[gpu,train,test,search]"
    "${pip[@]}" uninstall -y onnxruntime >/dev/null 2>&1 || true
    "${pip[@]}" install --force-reinstall --no-deps "onnxruntime-gpu>=1.17"
else
    echo "setup: no GPU: CPU torch 2.13.0, onnxruntime"
    if "${pip[@]}" show onnxruntime-gpu >/dev/null 2>&1; then
        "${pip[@]}" uninstall -y onnxruntime-gpu
        # it shared files with the CPU package, if that was installed too: restore them
        "${pip[@]}" install --force-reinstall --no-deps "onnxruntime>=1.17"
    fi
    "${pip[@]}" install "torch==2.13.0" ${TPRNA_TORCH_INDEX:+--index-url "$TPRNA_TORCH_INDEX"}
    "${pip[@]}" install -e ".[train,test,search]"
fi
.venv/bin/python -c "import torch, onnxruntime, tprna; print('setup: tprna', tprna.__version__, '| torch', torch.__version__, '| onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers())"
