# tap-dynamics developer entry points. Everything a fresh machine needs is installed from here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench bench-discovery bench-faults clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' 'meltano~=4.4'
	touch $(STAMP)

## test: type-check tap_dynamics/ (mypy, config in pyproject.toml), then run the whole suite
## (unit, emulator integration, Meltano end to end)
test: venv
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

## demo: emulator -> tap-dynamics -> Meltano -> DuckDB, then print row counts per table
demo: venv
	$(BIN)/python -m tests.demo

## bench: throughput/memory benchmark against the emulator (see README)
bench: venv
	$(BIN)/python -m bench.run

## bench-discovery: discovery of a 1,000-table org at 100 ms per request (see README)
bench-discovery: venv
	$(BIN)/python -m bench.discovery

## bench-faults: the fault-injection table (each fault, then all at once) shown in the README
bench-faults: venv
	$(BIN)/python -m bench.faults

clean:
	rm -rf $(VENV) .meltano output demo
