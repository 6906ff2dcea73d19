# healthbook-gateway: the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test system-deps bench fuzz clean
FUZZ_SECONDS ?= 300

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: start the gateway with the embedded demo defaults (MLLP 2575, HTTP 8080, emulator 8090)
run: $(STAMP)
	$(BIN)/healthbook-gateway demo

## system-deps: Debian packages the tests need (promtool, softhsm2); idempotent
system-deps:
	bash scripts/install-system-deps.sh

## test: install everything and run the whole suite
test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

## bench: run the benchmarks and print their figures
bench: $(STAMP)
	$(BIN)/python bench/run_all.py

## fuzz: fuzz the MLLP and FHIR entry points for FUZZ_SECONDS (default 300) and report crash sites
fuzz: $(STAMP)
	$(BIN)/python bench/fuzz.py --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) var build *.egg-info
