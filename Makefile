# The README's commands: `make book` (build the site), `make test` (everything CI runs), `make lab` (optional).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MATHJAX_VERSION := 3.2.2
ALPINE_VERSION := 3.17.5
LLAMA_CPP_VERSION := 0.3.36
# llama.cpp's default -march=native turns on AMX, which these VMs list but do not allow (it segfaults on the first
# eval); a fixed AVX-512 list dies with SIGILL where AVX-512 is missing (most laptops, GitHub's runners). So the
# instruction sets are read from this machine's /proc/cpuinfo, AMX always off (tools/llama_cpp_flags.py).
LLAMA_CMAKE_ARGS := $(shell $(PYTHON) tools/llama_cpp_flags.py)
# A wheel cache of its own, one per set of flags: a crashing wheel built with the default flags may sit in pip's
# shared cache, and pip's cache does not know which flags a wheel was built with.
LLAMA_WHEEL_CACHE := $(HOME)/.cache/lmkit/pip-llama-cpp-$(shell echo '$(LLAMA_CMAKE_ARGS)' | md5sum | cut -c1-8)

.PHONY: setup book test lab lint clean mutants llama-tests-v3 colab-check colab-check-short

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

# Alpine.js, served from the site, shows the precomputed state that a control selects (lmkit/book/controls.py).
_vendor/alpine/cdn.min.js:
	rm -rf _vendor/alpine && mkdir -p _vendor/alpine
	tmp=$$(mktemp -d) && (cd $$tmp && npm pack --silent alpinejs@$(ALPINE_VERSION) >/dev/null && tar xzf alpinejs-*.tgz) \
	  && cp $$tmp/package/dist/cdn.min.js _vendor/alpine/ && rm -rf $$tmp

# Every chapter is executed afresh on every build, two at a time (one per core, one thread each), into
# jupyter-cache; the book build then renders those outputs (execute_notebooks: cache). A chapter that fails here is
# executed again by the build itself, which fails with its traceback.
book: setup _vendor/mathjax/tex-chtml.js _vendor/alpine/cdn.min.js
	LMKIT_STATIC=1 OMP_NUM_THREADS=1 $(BIN)/python tools/nbtools.py execute _build/.jupyter_cache
	$(BIN)/python tools/nbtools.py page  # "What the notes say, checked", rendered from book/notes_claims.yml
	LMKIT_STATIC=1 $(BIN)/jupyter-book build . --warningiserror --keep-going
	@echo "site: _build/html/index.html"

# Debian's chromium and its matching driver: the site test moves the controls through WebDriver (selenium).
/usr/bin/chromium /usr/bin/chromedriver:
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null

lint: setup
	$(BIN)/ruff check .

# Two test workers on two cores, one thread each: more threads than cores makes PyTorch's spinning threads crawl.
test: lint book /usr/bin/chromium /usr/bin/chromedriver colab-check-short
	OMP_NUM_THREADS=1 LMKIT_SITE_DIR=_build/html $(BIN)/pytest -n 2 --dist loadscope --nbval-lax tests notebooks

# The Colab contract (tools/colab_check.py): Colab's published package versions on Python 3.13, each chapter's own
# install cell run as on Colab, then the chapter, from a folder outside the checkout. It installs the checkout's
# committed state (git's insteadOf), so commit first. All chapters on demand; make test runs the install check and two
# (skipped, saying so, on a machine without Python 3.13 - but never in CI).
colab-check: setup
	OMP_NUM_THREADS=2 $(BIN)/python tools/colab_check.py

colab-check-short: setup
	OMP_NUM_THREADS=1 $(BIN)/python tools/colab_check.py --chapters 01 10 --optional

# Mutation audit, on demand only (never in CI): the audit's named mutants, each applied in a private copy with the
# tests that must catch it, then mutmut's own mutants of the core modules listed in setup.cfg (a fresh run, about 15
# minutes, capped at 30) and their score, killed / (total - equivalent), with tests/mutation_equivalent.md's list.
mutants: setup
	OMP_NUM_THREADS=1 $(BIN)/python tools/mutants.py
	rm -rf mutants
	OMP_NUM_THREADS=1 timeout 1800 $(BIN)/mutmut run --max-children 2; $(BIN)/python tools/mutation_score.py

# llama.cpp built for an x86-64-v3 CPU (no AVX-512, no AMX) with its test suite run, on demand only (never in CI):
# proves tools/llama_cpp_flags.py builds a llama.cpp for machines without AVX-512. About an hour on 2 shared cores.
llama-tests-v3: setup
	nice -n 19 tools/llama_cpp_v3_tests.sh

lab: setup
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf _build _vendor/mathjax _vendor/alpine
