# The two commands of the README: `make run` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install lint repro clean-outputs

$(STAMP): pyproject.toml requirements.lock
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: this takes the local CPU build; an unpinned torch pulls CUDA.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	@start=$$(date +%s); \
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/recraft repro && \
	echo "dvc repro took $$(( $$(date +%s) - start )) s" && \
	$(BIN)/dvc metrics show metrics/evaluate.json && \
	echo "Browse the runs: $(BIN)/recraft ui   (MLflow UI on http://127.0.0.1:5000)"

# Two worker processes (a test file stays on one worker, so its module fixtures are made once);
# TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= 2
test: install
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

lint: install
	$(BIN)/ruff check components flows tests
