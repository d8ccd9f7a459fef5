# Everyday commands. `make run` and `make test` install what they need first.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_CUSTOMERS ?= 2000
PORT ?= 8000

.PHONY: install browser run test lint format check seed worker beat bench clean

$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed ($(PYTHON) not found); set PYTHON=..."; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $(STAMP)

install: $(STAMP)

## Debian's Chromium for the browser tests (Playwright drives it; no browser download).
## Installed when missing and running as root; otherwise says what to install (the tests skip without it).
CHROMIUM ?= chromium
browser:
	@command -v $(CHROMIUM) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update && apt-get install -y chromium; \
	  else \
	    echo "Browser tests need Chromium: run 'sudo apt-get install chromium' (Debian/Ubuntu); they are skipped without it."; \
	  fi; }

## Start the CRM with demo data ending today (SQLite and in-process tasks unless DATABASE_URL / REDIS_URL say otherwise).
## CLV is computed only when there is no current run, so a restart adds no trend point.
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo --customers $(DEMO_CUSTOMERS) --seed 42 --if-empty --values-if-missing
	@echo ""
	@echo "  CRM running at http://127.0.0.1:$(PORT)/  (admin at /admin/)"
	@echo "  Log in as manager_north, rep_north_1 ... or admin, password: demo-pass-2026"
	@echo ""
	$(PY) manage.py runserver 127.0.0.1:$(PORT)

## The whole test suite (on PostgreSQL and Redis when DATABASE_URL and REDIS_URL point at them).
test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .

check: install
	$(PY) manage.py check
	$(PY) manage.py makemigrations --check --dry-run

seed: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_demo --customers $(DEMO_CUSTOMERS) --seed 42 --values-if-missing

worker: install
	$(VENV)/bin/celery -A config worker --loglevel=info

beat: install
	$(VENV)/bin/celery -A config beat --loglevel=info

## Benchmarks, run by hand (the database ones need DATABASE_URL pointing at PostgreSQL); see README.
bench: install
	$(PY) bench/bench_fit.py
	@echo "Database benchmarks: bench/bench_clv_run.py, bench/bench_api.py, bench/bench_import.py, bench/bench_opportunities.py, bench/bench_analytics.py, bench/bench_pages.py"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
