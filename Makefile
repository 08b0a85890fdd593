# Carbon Wallet. Needs only python3 (3.11+), make and git; everything else is installed into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.8
export UV_PROJECT_ENVIRONMENT := $(VENV)
export PYTHONUNBUFFERED := 1

.PHONY: run test bench lint fmt clean install browser

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"
	@$(UV) sync --frozen --inexact --quiet
	@touch $@

# The page tests drive Debian's chromium (no browser downloads), with a CJK font so screenshots show Chinese.
# Installed where missing and allowed (root or passwordless sudo); otherwise the browser tests say why they fail.
BROWSER_PACKAGES := chromium fonts-wqy-microhei
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! fc-list :lang=zh 2>/dev/null | grep -q .; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
	    echo "chromium or a CJK font is missing and cannot be installed without root:" \
	         "apt-get install $(BROWSER_PACKAGES)" >&2; exit 0; fi; \
	  echo "installing $(BROWSER_PACKAGES) for the page tests …"; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $(BROWSER_PACKAGES) >/dev/null 2>&1 || \
	  { $$SUDO apt-get update -q >/dev/null 2>&1 && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $(BROWSER_PACKAGES) >/dev/null; }; \
	fi

run: install ## start everything (embedded PostgreSQL and Valkey unless DATABASE_URL / REDIS_URL are set)
	@$(PY) -m api.cli run

test: install browser ## lint, then the whole suite on real servers (and Debian's chromium for page tests)
	@$(VENV)/bin/ruff check --quiet .
	@$(PY) -m pytest $(PYTEST_ARGS)

bench: install ## benchmarks (GET targets, partner intake, energy and the mall, leaderboards, notifications, community pages and ledgers, the carbon market); results go to bench/RESULTS.md
	@$(PY) -m bench.run $(BENCH_ARGS)
	@$(PY) -m bench.intake $(INTAKE_ARGS)
	@$(PY) -m bench.energy $(ENERGY_ARGS)
	@$(PY) -m bench.leaderboards $(LEADERBOARD_ARGS)
	@$(PY) -m bench.notifications $(NOTIFICATION_ARGS)
	@$(PY) -m bench.community $(COMMUNITY_ARGS)
	@$(PY) -m bench.market $(MARKET_ARGS)

lint: install
	@$(VENV)/bin/ruff check .

fmt: install
	@$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
