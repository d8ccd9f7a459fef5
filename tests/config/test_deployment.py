"""The deployment files say what they should: five compose services, production settings refuse unsafe values."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_the_five_services(compose):
    assert set(compose["services"]) == {"postgres", "redis", "web", "worker", "beat"}


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ("web", "gunicorn config.wsgi:application"),
        ("worker", "celery -A config worker"),
        ("beat", "celery -A config beat"),
        ("web", "python manage.py migrate"),
    ],
)
def test_compose_app_commands(compose, service, expected):
    assert expected in compose["services"][service]["command"]


@pytest.mark.parametrize("service", ["web", "worker", "beat"])
def test_app_services_share_configuration_and_wait_for_backends(compose, service):
    spec = compose["services"][service]
    env = spec["environment"]
    assert env["DATABASE_URL"].startswith("postgres://")
    assert env["REDIS_URL"].startswith("redis://redis:6379")
    assert env["DEBUG"] == "0"
    assert "SECRET_KEY" in env
    assert spec["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert spec["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_database_credentials_match(compose):
    pg = compose["services"]["postgres"]["environment"]
    url = compose["services"]["web"]["environment"]["DATABASE_URL"]
    assert url == f"postgres://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}"


def _settings_in_subprocess(env_overrides: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "ALLOWED_HOSTS"}}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='config.settings'; django.setup()"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def test_production_refuses_the_development_secret_key():
    result = _settings_in_subprocess({"DEBUG": "0", "ALLOWED_HOSTS": "crm.example.com"})
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_refuses_empty_allowed_hosts():
    result = _settings_in_subprocess({"DEBUG": "0", "SECRET_KEY": "x" * 50, "ALLOWED_HOSTS": ""})
    assert result.returncode != 0
    assert "ALLOWED_HOSTS must be set" in result.stderr


def test_production_starts_with_safe_values():
    result = _settings_in_subprocess({"DEBUG": "0", "SECRET_KEY": "k" * 50, "ALLOWED_HOSTS": "crm.example.com"})
    assert result.returncode == 0, result.stderr
