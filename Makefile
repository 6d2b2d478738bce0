# tap-dynamics developer entry points. Everything a fresh machine needs is installed from here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-deps demo bench bench-discovery bench-faults bench-graph clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' 'meltano~=4.4'
	touch $(STAMP)

## test-deps: system packages the tests need: a PostgreSQL server (Debian's postgresql package),
## installed with apt-get when missing (as root); the tests start their own throw-away server
test-deps:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing the PostgreSQL server (Debian package postgresql) for the tests..."; \
		DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql; \
	else \
		echo "The tests need PostgreSQL's server binaries (initdb, postgres): install your distribution's postgresql package (Debian/Ubuntu: sudo apt-get install postgresql)" >&2; \
		exit 1; \
	fi

## test: type-check tap_dynamics/ (mypy, config in pyproject.toml), then run the whole suite
## (unit, emulator integration, Meltano end to end, PostgreSQL, Airflow)
test: venv test-deps
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

## bench-graph: Office 365 (Microsoft Graph): users at 999 per page vs the floor; events of 1,000 mailboxes at 300 ms per page
bench-graph: venv
	$(BIN)/python -m bench.graph

## bench-faults: the fault-injection table (each fault, then all at once) shown in the README
bench-faults: venv
	$(BIN)/python -m bench.faults

clean:
	rm -rf $(VENV) .meltano .airflow-venv output demo
