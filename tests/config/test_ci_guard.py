"""With CI=true the suite refuses to run without PostgreSQL and Redis instead of skipping tests."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pytest(env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, **env_overrides)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/config/test_deployment.py::test_compose_has_the_five_services"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_ci_run_fails_when_database_is_not_postgres():
    result = _pytest({"CI": "true", "DATABASE_URL": "sqlite:///unused.sqlite3", "REDIS_URL": ""})
    assert result.returncode != 0
    assert "DATABASE_URL does not point at PostgreSQL" in result.stdout + result.stderr


def test_ci_run_fails_when_services_are_unreachable():
    result = _pytest(
        {"CI": "true", "DATABASE_URL": "postgres://postgres@127.0.0.1:1/nowhere", "REDIS_URL": "redis://127.0.0.1:1/0"}
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "PostgreSQL cannot be reached" in output
    assert "Redis cannot be reached" in output


def test_local_run_without_services_still_runs():
    result = _pytest({"CI": "", "DATABASE_URL": "sqlite:///unused.sqlite3", "REDIS_URL": ""})
    assert result.returncode == 0, result.stdout + result.stderr
