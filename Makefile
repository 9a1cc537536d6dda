# edgerq developer commands. CI (.ci/run) runs `make test`, `make fault-test` and `make compose-test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DURATION ?= 60s
USERS ?= 50
TARGET ?= tunnel
LINT_PATHS := src tests $(wildcard bench) setup.py
# the optional mypyc build (edgerq.compiled lists the modules): its own venv, .venv stays pure
FAST_VENV ?= .venv-fast
FAST_BIN := $(FAST_VENV)/bin

.PHONY: help up test lint typecheck unit integration fault-test compose-test two-site-test promtool-test swarm-test lock loadtest bench bench-locust bench-cpu bench-scale bench-capacity clean
.PHONY: bench-wan bench-loss build-fast test-fast

help:
	@echo "make up            the dev suite on this machine: Docker bootstrapped if missing, Compose v2 or v1, up -d, healthy"
	@echo "make test          ruff, mypy and pytest (unit + integration); creates $(VENV)"
	@echo "make build-fast    the optional mypyc-compiled build into $(FAST_VENV) (needs a C compiler; docs/scaling.md)"
	@echo "make test-fast     the unit suite and the compiled build's own tests, run by $(FAST_VENV) (after build-fast)"
	@echo "make fault-test    kill -9 under load, pipe partition, soak, long fuzzing (about 11 min)"
	@echo "make compose-test  the Docker Compose suite end to end (bootstraps Docker as root)"
	@echo "make two-site-test deploy/public + deploy/private as two Compose projects (tests/twosite): the production set-up, rotation, upgrade (about 2 min; EDGERQ_COMPOSE=v1|v2 TWOSITE_CARRIER=tcp|udp TWOSITE_KEEP=1)"
	@echo "make promtool-test promtool check/test of the public host's Prometheus config and alert rules"
	@echo "make lock          regenerate requirements/image.lock (pinned, hashed deps of the edgerq image)"
	@echo "make swarm-test    deploy/swarm on a one-node swarm: kills, rolling updates, scaling under load (about 4 min)"
	@echo "make loadtest      headless Locust on the Compose suite (DURATION=60s USERS=50 TARGET=tunnel|direct|sc PROJECT=name)"
	@echo "make bench         edgerq vs direct, socat, ssh -R (about 14 min; BENCH_ARGS=--quick)"
	@echo "make bench-capacity CPU per request, per new connection and per MB, memory per connection and per pipe (docs/scaling.md)"
	@echo "make bench-cpu     SC and SP CPU µs per small keep-alive request (tcp), then the pipe's own Python per request (BENCH_ARGS: see python -m bench.hotpath --help)"
	@echo "make bench-locust  Locust on the running stack: p50 and CPU per container, direct vs sc:3000 vs the whole path"
	@echo "make bench-scale   10,000 idle tunneled connections: RSS per connection, all answered"
	@echo "make bench-loss    goodput across 0/2/10 % packet loss, tcp and udp (root) -> bench/results/loss.json"
	@echo "make bench-wan     tcp, tcp + stunnel, udp across an emulated WAN (root; ~15 min; BENCH_ARGS=--quick)"

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

test: lint typecheck
	$(BIN)/pytest

# Not incremental on purpose: always recompiles what is checked out now.
build-fast:
	rm -rf build
	test -x $(FAST_BIN)/python || $(PYTHON) -m venv $(FAST_VENV)
	$(FAST_BIN)/python -m pip install --quiet --upgrade pip
	$(FAST_BIN)/python -m pip install --quiet 'setuptools>=68' wheel 'mypy>=1.10'
	$(FAST_BIN)/python -m pip install --quiet --no-build-isolation '.[test]'
	EDGERQ_MYPYC=1 $(FAST_BIN)/python -m pip install --quiet --no-build-isolation --force-reinstall --no-deps .
	rm -rf build  # its .so files would slip into a later pure wheel built from this tree
	$(FAST_BIN)/python -m edgerq --version

test-fast:
	@test -x $(FAST_BIN)/python || { echo "no $(FAST_VENV): run make build-fast first"; exit 1; }
	EDGERQ_EXPECT_COMPILED=1 $(FAST_BIN)/pytest tests/unit tests/integration/test_compiled.py

fault-test: $(STAMP)
	$(BIN)/pytest tests/fault -m fault

compose-test: $(STAMP)
	PYTHON=$(BIN)/python scripts/compose-e2e

swarm-test: $(STAMP)
	scripts/docker-bootstrap
	$(BIN)/pytest tests/swarm -m swarm -s

up:
	scripts/up

# tests/twosite (pytest): each host its own copy of the repo and Compose project
# (EDGERQ_COMPOSE=v1|v2, TWOSITE_CARRIER=tcp|udp, TWOSITE_KEEP=1, TWOSITE_LOAD_WORKERS)
two-site-test: $(STAMP)
	timeout 1200 scripts/docker-bootstrap
	$(BIN)/pytest tests/twosite -m twosite -v -s -p no:cacheprovider

promtool-test:
	scripts/promtool-test

# the image's dependencies, pinned with their hashes, from pyproject.toml (+ extra "fast")
lock: $(STAMP)
	$(BIN)/python -m pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --extra fast \
		--no-emit-index-url --no-emit-find-links --output-file requirements/image.lock pyproject.toml

loadtest:
	scripts/loadtest --duration $(DURATION) --users $(USERS) --target $(TARGET) $(if $(PROJECT),--project-name $(PROJECT))

bench: $(STAMP)
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Locust on the running Compose stack: direct, sc:3000 and the whole path, interleaved
bench-locust: $(STAMP)
	$(BIN)/python -m bench.locust $(BENCH_ARGS)

bench-capacity: $(STAMP)
	$(BIN)/python -m bench.capacity $(BENCH_ARGS)

bench-cpu: $(STAMP)
	$(BIN)/python -m bench.hotpath $(BENCH_ARGS)
	$(BIN)/python -m bench.hotpath_core

bench-scale: $(STAMP)
	$(BIN)/python -m bench.scale $(BENCH_ARGS)

# the README's lossy-link table: test_loss.py's goodput into a results file, then rendered
bench-loss: $(STAMP)
	EDGERQ_LOSS_RESULTS=bench/results/loss.json $(BIN)/pytest -q tests/integration/test_loss.py
	$(BIN)/python -m bench.loss

bench-wan: $(STAMP)
	$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.wan.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(FAST_VENV) .mypy_cache .pytest_cache .ruff_cache build src/*.egg-info
