# tap-dynamics developer entry points. Everything a fresh machine needs is installed from here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-deps build-deps apt-install demo bench bench-discovery bench-faults bench-graph clean

venv: $(STAMP)

$(STAMP): pyproject.toml | build-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' 'meltano~=4.4'
	touch $(STAMP)

## build-deps: what the venv needs to build python-gssapi (auth_scheme Kerberos) against MIT
## Kerberos — libkrb5-dev, gcc, and python3-dev when the interpreter has no headers — installed
## with apt-get when missing (as root), so that `make demo` works on a fresh machine too
build-deps:
	@missing=""; \
	for pair in krb5-config:libkrb5-dev gcc:gcc; do \
		cmd=$${pair%%:*}; command -v $$cmd >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	$(PYTHON) -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
		|| missing="$$missing python3-dev"; \
	$(MAKE) --no-print-directory apt-install PACKAGES="$$missing"

## test-deps: system packages the tests need, installed with apt-get when missing (as root): a
## PostgreSQL server (postgresql) and an MIT Kerberos KDC with its admin and client tools
## (krb5-kdc, krb5-admin-server, krb5-user) — the tests start their own throw-away server and KDC
test-deps: build-deps
	@missing=""; \
	{ ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; } || missing="$$missing postgresql"; \
	for pair in krb5kdc:krb5-kdc kadmin.local:krb5-admin-server kinit:krb5-user; do \
		cmd=$${pair%%:*}; \
		command -v $$cmd >/dev/null 2>&1 || [ -x /usr/sbin/$$cmd ] || missing="$$missing $${pair#*:}"; \
	done; \
	$(MAKE) --no-print-directory apt-install PACKAGES="$$missing"

apt-install:
	@if [ -z "$(strip $(PACKAGES))" ]; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian packages:$(PACKAGES)"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(PACKAGES); \
	else \
		echo "Missing system packages:$(PACKAGES) — install them (Debian/Ubuntu: sudo apt-get install$(PACKAGES))" >&2; \
		exit 1; \
	fi

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
