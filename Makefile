# Two commands a newcomer runs: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU wheel of torch 2.13.0 is installed first so that no CUDA build is pulled in.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[train,dev,teacher,openvino]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ladabert run --quick --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -m "not gpu" -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks research
	$(BIN)/ruff format --check src tests benchmarks research

clean:
	rm -rf runs .pytest_cache build src/*.egg-info
