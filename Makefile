# Carbon Wallet. Needs only python3 (3.11+), make and git; everything else is installed into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.8
export UV_PROJECT_ENVIRONMENT := $(VENV)
export PYTHONUNBUFFERED := 1

.PHONY: run test bench lint fmt clean install

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	@$(UV) sync --frozen --inexact --quiet
	@touch $@

run: install ## start everything (embedded PostgreSQL and Valkey unless DATABASE_URL / REDIS_URL are set)
	@$(PY) -m api.cli run

test: install ## lint, then the whole suite on real servers
	@$(VENV)/bin/ruff check --quiet .
	@$(PY) -m pytest $(PYTEST_ARGS)

bench: install ## benchmarks (GET targets, partner intake, energy and the mall, leaderboards, notifications); results go to bench/RESULTS.md
	@$(PY) -m bench.run $(BENCH_ARGS)
	@$(PY) -m bench.intake $(INTAKE_ARGS)
	@$(PY) -m bench.energy $(ENERGY_ARGS)
	@$(PY) -m bench.leaderboards $(LEADERBOARD_ARGS)
	@$(PY) -m bench.notifications $(NOTIFICATION_ARGS)

lint: install
	@$(VENV)/bin/ruff check .

fmt: install
	@$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
