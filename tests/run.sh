#!/usr/bin/env bash
# The README's second set-up command (and CI's): create .venv, install qpsam with every extra and the test tools,
# install QuPath's own code (0.5.1, 0.6.0, 0.7.0 from ../shared/qupath) and Groovy 4 outside the checkout, then run
# mypy and the whole suite. In CI (CI=true) a missing harness or Groovy is an error; elsewhere those tests skip.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PY="$VENV/bin/python"
SHARED="${SHARED:-../shared}"
export QPSAM_QUPATH_HOME="${QPSAM_QUPATH_HOME:-$HOME/.cache/qpsam/qupath}"

bash examples/demo.sh --install-only
"$PY" -m pip install -q -e '.[sam,openvino,server,dev,dask,paquo,live]'

if [[ -f "$SHARED/qupath/install.sh" ]]; then
    bash "$SHARED/qupath/install.sh" "$QPSAM_QUPATH_HOME" all >/dev/null
elif [[ -n "${CI:-}" ]]; then
    echo "error: $SHARED/qupath/install.sh not found; CI needs the QuPath harness" >&2; exit 1
else
    echo "warning: no QuPath harness at $SHARED/qupath; the QuPath tests will be skipped" >&2
fi
bash tests/get-groovy.sh >/dev/null || {
    [[ -z "${CI:-}" ]] || exit 1
    echo "warning: Groovy 4 not fetched; the groovy tests will be skipped" >&2
}

"$PY" -m mypy
# paquo starts one JVM per process: the whole suite runs with QuPath 0.7.0 (QuPath's own reader still checks files
# in all three versions), then the paquo-marked tests run again in a process each for 0.6.0 and 0.5.1.
QPSAM_QUPATH_VERSION=0.7.0 "$PY" -m pytest -q "$@"
QPSAM_QUPATH_VERSION=0.6.0 "$PY" -m pytest -q -m paquo "$@"
QPSAM_QUPATH_VERSION=0.5.1 "$PY" -m pytest -q -m paquo "$@"
