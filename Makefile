# The README's commands: `make book` (build the site), `make test` (everything CI runs), `make lab` (optional).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MATHJAX_VERSION := 3.2.2
LLAMA_CPP_VERSION := 0.3.36
# llama.cpp's default -march=native turns on AMX, which these VMs list but do not allow (it segfaults on the first
# eval); name the instruction sets instead (this project's machines all have AVX-512).
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
  -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON
# A wheel cache of its own: a crashing wheel built with the default flags may sit in pip's shared cache.
LLAMA_WHEEL_CACHE := $(HOME)/.cache/lmkit/pip-llama-cpp

.PHONY: setup book test lab lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -e .
	$(BIN)/python -c "import llama_cpp" 2>/dev/null || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" \
	  $(BIN)/python -m pip install --quiet --cache-dir $(LLAMA_WHEEL_CACHE) llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(BIN)/python -m lmkit.assets
	touch $@

# MathJax served from the site itself, so formulas render offline.
_vendor/mathjax/tex-chtml.js:
	rm -rf _vendor/mathjax && mkdir -p _vendor/mathjax
	tmp=$$(mktemp -d) && (cd $$tmp && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null && tar xzf mathjax-*.tgz) \
	  && cp -r $$tmp/package/es5/. _vendor/mathjax/ && rm -rf $$tmp

book: setup _vendor/mathjax/tex-chtml.js
	LMKIT_STATIC=1 $(BIN)/jupyter-book build . --warningiserror --keep-going
	@echo "site: _build/html/index.html"

/usr/bin/chromium:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

lint: setup
	$(BIN)/ruff check .

# Two test workers on two cores, one thread each: more threads than cores makes PyTorch's spinning threads crawl.
test: lint book /usr/bin/chromium
	OMP_NUM_THREADS=1 LMKIT_SITE_DIR=_build/html $(BIN)/pytest -n 2 --dist loadscope --nbval-lax tests notebooks

lab: setup
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf _build _vendor/mathjax
