#!/usr/bin/env bash
# Prints the Python that benchmarks and fixture generators run: $SEGC_PYTHON when set;
# else python3 when it imports every module named on the command line; else .venv/bin/python,
# creating .venv and installing the reference stack from PyPI (torch 2.x, numpy, safetensors,
# monai, nibabel, transformers, onnxruntime) the first time. Prints nothing and fails when no
# such Python can be had. Never needed to build or test segc.
set -u
cd "$(dirname "$0")/.."
mods=${*:-torch}
imports=$(echo "$mods" | tr ' ' ',')
if [ -n "${SEGC_PYTHON:-}" ]; then echo "$SEGC_PYTHON"; exit 0; fi
if python3 -c "import $imports" 2>/dev/null; then command -v python3; exit 0; fi
if ! .venv/bin/python -c "import $imports" 2>/dev/null; then
  echo "bench: installing the PyTorch reference stack into .venv (PyPI; a few minutes, once)" >&2
  { [ -x .venv/bin/python ] || python3 -m venv .venv; } >&2 || exit 1
  .venv/bin/python -m pip install -q torch numpy safetensors monai nibabel transformers timm onnx onnxruntime >&2 || exit 1
fi
.venv/bin/python -c "import $imports" 2>/dev/null || exit 1
echo "$PWD/.venv/bin/python"
