# Everyday commands (see CONTRIBUTING.md). Run from the repository root; PYTHON is the
# interpreter that has the package's dependencies (`pip install -e '.[test]'`).
PYTHON ?= python3
export PYTHONPATH := $(CURDIR)/src$(if $(PYTHONPATH),:$(PYTHONPATH))
LINT_PATHS := src tests benchmarks fuzz examples

.PHONY: help test test-fast typecheck lint check bench bench-net fuzz ci

help:
	@echo "make test       the whole suite (integration tests need root; they skip elsewhere)"
	@echo "make test-fast  the suite without integration tests"
	@echo "make typecheck  mypy --strict (config in pyproject.toml)"
	@echo "make lint       ruff check (rules in pyproject.toml)"
	@echo "make check      typecheck + lint + the layer test"
	@echo "make bench      benchmarks that need no privileges (sim data path, pcap I/O)"
	@echo "make bench-net  veth benchmarks beside their peers (root; trafgen/tcpdump/tcpreplay)"
	@echo "make fuzz       a longer fuzz run of the readers, parsers and classifier"
	@echo "make ci         what .ci/run does (installs packages and a venv first)"

test:
	$(PYTHON) -m pytest -q tests

test-fast:
	$(PYTHON) -m pytest -q -m "not integration" tests

typecheck:
	$(PYTHON) -m mypy --strict

lint:
	$(PYTHON) -m ruff check $(LINT_PATHS)

check: typecheck lint
	$(PYTHON) -m pytest -q tests/test_layers.py

bench:
	$(PYTHON) benchmarks/sim_datapath.py
	$(PYTHON) benchmarks/pcap_io.py

bench-net:
	$(PYTHON) benchmarks/rx_veth.py
	$(PYTHON) benchmarks/tx_veth.py
	$(PYTHON) benchmarks/latency_veth.py
	$(PYTHON) benchmarks/capture_veth.py
	$(PYTHON) benchmarks/replay_veth.py
	$(PYTHON) benchmarks/forward_veth.py

fuzz:
	$(PYTHON) fuzz/fuzz_wire_pcap.py

ci:
	.ci/run
