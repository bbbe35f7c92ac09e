# Every target sets itself up on a fresh machine: it creates .venv and installs the project.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export SEALPOD_HOME ?= $(CURDIR)/.venv/sealpod-home

.PHONY: test lint typecheck unit demo bench clean sysdeps

# System packages first (FUSE: libfuse3-dev, pkg-config, fuse3): installed as root with apt,
# otherwise the script names what is missing and the build goes on without the fuse extra.
sysdeps:
	bash scripts/sysdeps.sh

$(STAMP): pyproject.toml | sysdeps
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	if pkg-config --exists fuse3 2>/dev/null; then \
	  $(PY) -m pip install -q --disable-pip-version-check -e '.[dev,postgres,fuse]'; \
	else \
	  $(PY) -m pip install -q --disable-pip-version-check -e '.[dev,postgres]'; \
	fi
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/ruff check src tests bench

# Twice: as installed, and as on a machine without the fuse extra (pyfuse3/trio absent).
typecheck: $(STAMP)
	$(VENV)/bin/mypy
	$(PY) scripts/mypy_without_extras.py

unit: $(STAMP)
	$(VENV)/bin/pytest

test: sysdeps lint typecheck unit

demo: sysdeps $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash scripts/demo.sh

bench: $(STAMP)
	for b in bench/*_bench.py; do $(PY) $$b; done

clean:
	rm -rf $(VENV) demo-out
