# healthbook-gateway: the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test system-deps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: start the gateway with the embedded demo defaults (MLLP 2575, HTTP 8080, emulator 8090)
run: $(STAMP)
	$(BIN)/healthbook-gateway demo

## system-deps: Debian packages the tests need (promtool, softhsm2, chromium); idempotent
system-deps:
	bash scripts/install-system-deps.sh

## test: install everything and run the whole suite
test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

## bench: run the benchmarks and print their figures
bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) var build *.egg-info
