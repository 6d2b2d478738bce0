# tap-dynamics developer entry points. Everything a fresh machine needs is installed from here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench bench-discovery lint clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' 'meltano~=4.4'
	touch $(STAMP)

## test: run the whole suite (unit, emulator integration, Meltano end to end)
test: venv
	$(BIN)/python -m pytest -q

## demo: emulator -> tap-dynamics -> Meltano -> DuckDB, then print row counts per table
demo: venv
	$(BIN)/python -m tests.demo

## bench: throughput/memory benchmark against the emulator (see README)
bench: venv
	$(BIN)/python -m bench.run

lint: venv
	$(BIN)/python -m ruff check tap_dynamics tests bench || true

clean:
	rm -rf $(VENV) .meltano output demo

.PHONY: bench-faults
## bench-faults: the fault-injection table (each fault, then all at once) shown in the README
bench-faults: venv
	$(BIN)/python -m bench.faults
