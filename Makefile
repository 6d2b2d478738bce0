# tap-dynamics developer entry points. Everything a fresh machine needs is installed from here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-deps build-deps demo bench bench-discovery bench-faults bench-graph clean

venv: $(STAMP)

$(STAMP): pyproject.toml | build-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' 'meltano~=4.4'
	touch $(STAMP)

# `$(NEED) CHECK PACKAGE …`: every Debian package whose shell CHECK fails, installed with apt-get
# when run as root (anyone else gets one line naming them, and the target fails).
NEED = need() { missing=""; \
	while [ $$\# -gt 1 ]; do sh -c "$$1" >/dev/null 2>&1 || missing="$$missing $$2"; shift 2; done; \
	if [ -z "$$missing" ]; then return 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian packages:$$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else \
		echo "Missing system packages:$$missing — install them (Debian/Ubuntu: sudo apt-get install$$missing)" >&2; \
		return 1; \
	fi; }; need

## build-deps: what creating the venv needs on a fresh machine (so `make demo` works there too):
## venv itself (Debian's python3-venv), and for python-gssapi (auth_scheme Kerberos) MIT
## Kerberos' headers, gcc and the interpreter's headers (python3-dev)
build-deps:
	@$(NEED) '$(PYTHON) -c "import ensurepip"' python3-venv \
		'$(PYTHON) -c "import os, sysconfig; assert os.path.isfile(sysconfig.get_path(\"include\") + \"/Python.h\")"' python3-dev \
		'command -v krb5-config' libkrb5-dev 'command -v gcc' gcc

## test-deps: what the tests start besides the venv: a PostgreSQL server (postgresql) and an MIT
## Kerberos KDC with its admin and client tools — each test starts its own throw-away server/KDC
test-deps: build-deps
	@$(NEED) 'ls /usr/lib/postgresql/*/bin/initdb || command -v initdb' postgresql \
		'command -v krb5kdc || test -x /usr/sbin/krb5kdc' krb5-kdc \
		'command -v kadmin.local || test -x /usr/sbin/kadmin.local' krb5-admin-server \
		'command -v kinit' krb5-user

## test: type-check tap_dynamics/ (mypy, config in pyproject.toml), then run the whole suite
## (unit, emulator integration, Meltano end to end, PostgreSQL, Airflow)
test: test-deps venv
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

## demo: emulator -> tap-dynamics -> Meltano -> DuckDB, then print row counts per table
demo: venv
	$(BIN)/python -m tests.demo

## bench: throughput/memory benchmark against the emulator (see README)
bench: venv
	$(BIN)/python -m bench.run

## bench-discovery: discovery of a 1,000-table org, then of a 2,000-entity F&O $metadata, at 100 ms per request (see README)
bench-discovery: venv
	$(BIN)/python -m bench.discovery
	$(BIN)/python -m bench.discovery --finops-entities 2000

## bench-graph: Office 365 (Microsoft Graph): users at 999 per page vs the floor; events of 1,000 mailboxes at 300 ms per page
bench-graph: venv
	$(BIN)/python -m bench.graph

## bench-faults: the fault-injection table (each fault, then all at once) shown in the README
bench-faults: venv
	$(BIN)/python -m bench.faults

clean:
	rm -rf $(VENV) .meltano .airflow-venv output demo
