# Every target sets up what it needs: `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8550
# Two cores here: one test worker per core keeps the end-to-end tests honest.
TEST_WORKERS ?= 2

.PHONY: all install lock run up test lint fmt typecheck loadtest bench bench-quick clean

all: lint test

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench,plot]'
	touch $(STAMP)

install: $(STAMP)

# Renew constraints.txt: the newest releases pyproject.toml accepts, in a scratch venv.
# Run make lint test after it, and commit the file only if they pass.
lock:
	rm -rf $(VENV).lock
	$(PYTHON) -m venv $(VENV).lock
	$(VENV).lock/bin/python -m pip install --quiet --upgrade pip
	$(VENV).lock/bin/python -m pip install --quiet -e '.[dev,bench,plot]'
	{ sed -n '/^#/p' constraints.txt; \
	  $(VENV).lock/bin/python -m pip freeze --exclude-editable | grep -v '^-e'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf $(VENV).lock

run: install
	$(BIN)/counter-service serve --host $(HOST) --port $(PORT)

# The compose topology with local processes: redis-server, REPLICAS replicas, and nginx
# on 127.0.0.1:UP_PORT with deploy/nginx/counter-service.conf. Ctrl-C stops everything.
REPLICAS ?= 3
UP_PORT ?= 8080
up: install
	tools/ensure-command.sh redis-server redis-server
	tools/ensure-command.sh nginx nginx
	$(BIN)/counter-service up --replicas $(REPLICAS) --port $(UP_PORT)

test: install
	tools/ensure-command.sh redis-server redis-server
	tools/ensure-command.sh nginx nginx
	tools/ensure-command.sh chromium chromium optional
	tools/ensure-promtool.sh $(BIN)
	$(BIN)/pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# A sensible default load: 2 spawned workers, 1,000 sessions; results in reports/.
LOADTEST_ARGS ?= --spawn 2 --sessions 1000 --ramp 100 --clickers 20 --rate 100 --duration 20
loadtest: install
	tools/ensure-command.sh redis-server redis-server
	tools/ensure-command.sh nginx nginx
	tools/ensure-command.sh chromium chromium optional
	mkdir -p reports
	$(BIN)/counter-service loadtest $(LOADTEST_ARGS) \
		--out reports/loadtest.json --plot reports/loadtest.png

# Every variant (this project and the baselines) in one command, so ratios hold.
bench: install
	tools/ensure-command.sh redis-server redis-server
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

bench-quick: install
	tools/ensure-command.sh redis-server redis-server
	$(BIN)/python -m benchmarks.run --quick $(BENCH_ARGS)

lint: install typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install
	$(BIN)/mypy

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
