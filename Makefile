# islandora-job: the README's commands.
#   make deploy   deploy gearmand, the PHP extension and the worker onto this machine (ansible-playbook site.yml)
#   make test     every test of the project (what CI runs)
#   make check    lint, types and unit tests: the quick everyday loop
# Each target does its own set-up on a fresh Debian 12 machine as root.

SHELL := /bin/bash
.SHELLFLAGS := --norc -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

# Debian packages the tests need: the real peers (gearmand, the gearman CLI, PHP with the extension)
# and the queue back-ends the role tests start on free ports.
APT_TEST := gearman-job-server gearman-tools php-cli php-gearman python3-venv \
	sqlite3 redis-server memcached nftables iproute2 postgresql php-sqlite3 prometheus chromium \
	mariadb-server php-mysql php-pgsql
# What `make bench` adds: database servers for the queue-type comparison (started as subprocesses on free ports).
APT_BENCH := mariadb-server postgresql
SOAK_JOBS ?= 100000
BENCH_ARGS ?=
# What the molecule harness needs on this machine: systemd-nspawn hosts in network namespaces, reached over SSH.
APT_MOLECULE := systemd-container debootstrap iptables openssh-client iproute2
SCENARIO ?=
# What `make deploy` needs on the controller itself.
APT_DEPLOY := python3-venv

.PHONY: help deploy test check lint typecheck unit integration molecule molecule-deps system-deps venv bench soak clean

help:
	@echo "make deploy   deploy the Gearman stack and the worker onto this machine (ansible-playbook site.yml)"
	@echo "make test     run every test of the project, as CI does"
	@echo "make check    lint, types and unit tests (under two minutes)"
	@echo "make molecule the roles on real systemd hosts (SCENARIO=name for one; all by default)"
	@echo "make bench    benchmarks (figures, never pass/fail; BENCH_ARGS=--quick for a 1-minute run)"
	@echo "make soak     100,000 jobs under chaos (about 10 minutes; exits 1 on any lost job)"

$(VENV)/.installed: pyproject.toml
	scripts/apt-install python3-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q -e examples/islandora_job_demo
	touch $@

venv: $(VENV)/.installed

system-deps:
	scripts/apt-install $(APT_TEST)

deploy: venv
	scripts/apt-install $(APT_DEPLOY)
	@echo "Deploying gearmand (sqlite queue), the PHP gearman extension and the islandora-job worker onto this machine"
	$(BIN)/ansible-playbook site.yml

# The package and the tooling that is code too (the molecule harness, the wheelhouse builder, the callback plugin).
LINT_PATHS := islandora_job tests benchmarks molecule/shared roles/islandora_job_worker/files roles/gearman_server/files scripts

lint: venv
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

typecheck: venv
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

check: lint typecheck unit
	$(BIN)/python scripts/render_role_variables.py --check

integration: venv system-deps
	$(BIN)/pytest tests $(PYTEST_ARGS)

# The roles converged on real systemd-nspawn hosts (molecule/README.md); every scenario unless SCENARIO is set.
molecule: venv molecule-deps
	molecule/run-scenarios $(SCENARIO)

# The package step of `make molecule` on its own: the fresh-host scenario runs it inside a host, where molecule
# itself cannot run nested.
molecule-deps:
	scripts/apt-install $(APT_MOLECULE)

test: lint typecheck integration molecule

# Benchmarks measure, they never pass or fail on a time.
bench: venv system-deps
	scripts/apt-install $(APT_BENCH)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m benchmarks.client_bench
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

soak: venv system-deps
	$(BIN)/python -m benchmarks.soak --jobs $(SOAK_JOBS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
