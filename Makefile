# healthbook-gateway: the two commands a new user needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint system-deps bench fuzz clean constraints
FUZZ_SECONDS ?= 300

# Exact versions from constraints.txt, the same ones the Dockerfile installs.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --constraint constraints.txt --upgrade pip
	$(BIN)/pip install --quiet --constraint constraints.txt -e '.[test]'
	touch $(STAMP)

## run: start the gateway with the embedded demo defaults (MLLP 2575, HTTP 8080, emulator 8090)
run: $(STAMP)
	$(BIN)/healthbook-gateway demo

## system-deps: Debian packages the tests need (promtool, softhsm2, chromium, postgresql, haproxy); idempotent
system-deps:
	bash scripts/install-system-deps.sh

## lint: ruff (its default rules) and mypy (gateway, adapters, mappings) must report nothing
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## test: install everything, lint, and run the whole suite (2 pytest workers: many tests wait on sockets,
## fsync and subprocesses rather than on a core; 2 workers took 3m56s-3m58s on 2 cores, 4 workers no less)
test: lint system-deps
	$(BIN)/python -m pytest -q -n 2

## bench: run the benchmarks and print their figures
bench: $(STAMP)
	$(BIN)/python bench/run_all.py

## fuzz: fuzz the MLLP and FHIR entry points for FUZZ_SECONDS (default 300) and report crash sites
fuzz: $(STAMP)
	$(BIN)/python bench/fuzz.py --seconds $(FUZZ_SECONDS)

## constraints: re-pin constraints.txt to the newest versions pyproject.toml allows (then run make test)
constraints:
	rm -rf build/constraints-venv
	$(PYTHON) -m venv build/constraints-venv
	build/constraints-venv/bin/pip install --quiet --upgrade pip
	build/constraints-venv/bin/pip install --quiet '.[test]'
	{ sed -n '/^#/p' constraints.txt; build/constraints-venv/bin/pip freeze --all --exclude healthbook-gateway \
		--exclude setuptools; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf build/constraints-venv

clean:
	rm -rf $(VENV) var build *.egg-info
