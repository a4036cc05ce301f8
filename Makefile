# recipe: `make demo` runs all six stages on configs/digits.yaml (CPU); `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
# Pinned so pip takes the local CPU wheel; override e.g. `make setup TORCH=torch==2.5.1`.
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
RECIPE := $(BIN)/recipe

.PHONY: setup demo test test-slow test-all clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

demo: setup
	$(RECIPE) run configs/digits.yaml
	$(RECIPE) status

test: setup
	$(BIN)/python -m pytest -q -m "not slow"

SLOW ?= slow
test-slow: setup  # exit 5 = no slow test selected, which is fine
	$(BIN)/python -m pytest -q -m "$(SLOW)" || [ $$? -eq 5 ]

test-all: setup
	$(BIN)/python -m pytest -q

# the real text configs/text-gpt.yaml reads (pydoc_data.topics, shipped with Python; no download)
data/pydoc-topics: setup
	$(BIN)/python scripts/pydoc_topics.py $@

# the six stages on text: a char-level GPT on the Python language reference (~5 minutes on 2 quiet cores)
demo-text: data/pydoc-topics
	$(RECIPE) run configs/text-gpt.yaml
	$(RECIPE) status configs/text-gpt.yaml

clean:
	rm -rf runs .pytest_cache
