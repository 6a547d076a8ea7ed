# dsgateway: every target installs what it needs and is safe to run again.
# `make demo` and `make test` are the two commands a newcomer needs (see README.md).

SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTHON ?= python3
R_LIB ?= $(CURDIR)/.rlib
export R_LIBS_USER := $(R_LIB)
export DSGATEWAY_R_LIB := $(R_LIB)

APT_PACKAGES := r-base-core r-base-dev r-cran-jsonlite r-cran-httr
# Only the web console's browser tests need chromium (81 MB, about 300 MB installed with
# its libraries): `make setup` and `make test` install it, `make demo` does not.
TEST_APT_PACKAGES := chromium
R_PKG_SRC := algorithms/R/dsGatewayBase
R_PKG_FILES := $(shell find $(R_PKG_SRC) -type f 2>/dev/null)

.PHONY: all setup demo-setup system-deps test-system-deps venv rpkg test test-fast lint demo bench docs clean

all: test

## setup: system packages (R from Debian), the virtualenv, the R server package
setup: demo-setup test-system-deps
demo-setup: system-deps venv rpkg

system-deps: .stamps/system-deps
.stamps/system-deps: scripts/install-system-deps.sh
	@bash scripts/install-system-deps.sh $(APT_PACKAGES)
	@mkdir -p .stamps && touch $@

test-system-deps: .stamps/test-system-deps
.stamps/test-system-deps: scripts/install-system-deps.sh
	@bash scripts/install-system-deps.sh $(TEST_APT_PACKAGES)
	@mkdir -p .stamps && touch $@

# pip --no-compile: compiling every installed module was two thirds of this step (30 s
# against 12 s on the 2-core machine); Python compiles what is imported, on first use.
venv: $(VENV)/.installed
$(VENV)/.installed: setup.cfg constraints.txt .stamps/system-deps scripts/rpy2-requirement.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install -q --upgrade pip setuptools wheel
	@$(PIP) install -q --no-compile -c constraints.txt "$$(bash scripts/rpy2-requirement.sh)" \
		-e ".[node,coordinator,algorithms,images,test]"
	@touch $@

rpkg: $(R_LIB)/.dsGatewayBase.installed
$(R_LIB)/.dsGatewayBase.installed: $(R_PKG_FILES) .stamps/system-deps
	@mkdir -p $(R_LIB)
	@R CMD INSTALL --no-multiarch --library=$(R_LIB) $(R_PKG_SRC) >/dev/null
	@touch $@

## test: the whole suite (unit, functional, e2e; slow tests included). The Docker images
## the e2e tests need are made in the background meanwhile (scripts/prepare-docker.sh).
test: setup
	@bash scripts/ensure-services.sh
	@PYTHON=$(PY) bash scripts/prepare-docker.sh --background
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

## test-fast: skip the tests marked slow (for the edit-test loop)
test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow"

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## demo: a coordinator and three stations on synthetic MS registries, and a federated
## study through them (docs/getting-started.md). DEMO_ARGS="--keep-running" leaves them up.
DEMO_ARGS ?=
demo: demo-setup
	$(PY) -m gateway.cli demo $(DEMO_ARGS)

## docs: regenerate docs/reference/ (configuration and REST API) from the code
docs: venv
	$(PY) -m gateway.docs_reference all

## bench: measure the figures in docs/performance.md (writes it anew)
bench: setup
	$(PY) bench/run.py --write docs/performance.md

clean:
	rm -rf $(VENV) $(R_LIB) .stamps build *.egg-info
