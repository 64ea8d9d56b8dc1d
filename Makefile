# clinicflow: the two commands of the README, and the steps they are made of.
# Python packages come from requirements/dev.lock (exact versions, hashes checked); Kafka jars and
# FerretDB are fetched once and cached (see scripts/infra.py).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Node tools the suite runs (the AsyncAPI parser, Standard Webhooks): exact versions from the lock.
NODE_DIR := tests/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed

LOCK_FLAGS := --generate-hashes --universal --python-version 3.11 --quiet

.PHONY: up down test chaos lint typecheck unit infra-up infra-down infra-status install promtool bench schemas clean lock

$(STAMP): pyproject.toml requirements/dev.lock
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11+"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# No install scripts: neither package builds anything, and one dependency's only script reports
# the install to its vendor over the network.
$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm not found: install Node.js 20+"; exit 2; }
	npm ci --prefix $(NODE_DIR) --no-audit --no-fund --ignore-scripts
	@touch $(NODE_STAMP)

## make lock: re-resolve requirements/*.lock after a change to pyproject.toml's dependencies
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml requirements/build.in --extra dev $(LOCK_FLAGS) \
		-o requirements/dev.lock
	$(BIN)/uv pip compile pyproject.toml requirements/build.in $(LOCK_FLAGS) \
		-c requirements/dev.lock -o requirements/runtime.lock

install: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m scripts.infra install

## make up: local Kafka + FerretDB + the three services with the demo sites (Ctrl-C stops)
up: install
	$(BIN)/python -m scripts.stack up

## make down: stops everything `make up` started
down:
	@if [ -x $(BIN)/python ]; then $(BIN)/python -m scripts.stack down; else echo "nothing to stop"; fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

# promtool checks deploy/prometheus/ in the suite: built from its Go module once, cached.
promtool: $(STAMP)
	$(BIN)/python -m scripts.infra promtool

## make test: lint, type check and the whole suite against real Kafka and FerretDB
test: install promtool lint typecheck
	$(BIN)/pytest

## make chaos: only the fault-injection suite (kills, restarts, pauses, poison; prints its table)
chaos: install
	$(BIN)/pytest -m chaos -s

infra-up: install
	$(BIN)/python -m scripts.infra up

infra-down:
	$(BIN)/python -m scripts.infra down

infra-status:
	$(BIN)/python -m scripts.infra status

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(NODE_DIR)/node_modules .mypy_cache .ruff_cache .pytest_cache
