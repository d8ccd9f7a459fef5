"""Shared fixtures, and the rule that CI runs every test against real PostgreSQL and Redis.

Locally, tests marked `postgres` or `redis` are skipped when those services are not
configured; with CI=true a missing service fails the whole run instead of skipping.
"""

from __future__ import annotations

import os

import pytest
from django.conf import settings

from config.celery import app as celery_app

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _redis_reachable() -> bool:
    if not settings.REDIS_URL:
        return False
    import redis

    try:
        return bool(redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def pytest_configure(config):
    # Fast hashing: tests create many users; production keeps Django's default hashers.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    if IN_CI:
        problems = []
        if not settings.IS_POSTGRES:
            problems.append("DATABASE_URL does not point at PostgreSQL")
        else:
            import psycopg2

            db = settings.DATABASES["default"]
            try:
                psycopg2.connect(
                    dbname="postgres", user=db["USER"], host=db["HOST"] or None, port=db["PORT"] or None,
                    password=db["PASSWORD"] or None, connect_timeout=3,
                ).close()
            except psycopg2.Error as exc:
                problems.append(f"PostgreSQL cannot be reached: {exc}")
        if not _redis_reachable():
            problems.append("Redis cannot be reached at REDIS_URL")
        if problems:
            pytest.exit("CI=true but: " + "; ".join(problems), returncode=3)


def pytest_collection_modifyitems(config, items):
    redis_ok = _redis_reachable()
    for item in items:
        if "postgres" in item.keywords and not settings.IS_POSTGRES:
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL: set DATABASE_URL=postgres://..."))
        if "redis" in item.keywords and not redis_ok:
            item.add_marker(pytest.mark.skip(reason="needs Redis: set REDIS_URL=redis://..."))


def set_celery_eager(eager: bool) -> None:
    """Run tasks in-process (True) or send them to the broker (False).

    The app reads Django settings with the CELERY_ namespace, so the namespaced key is the
    one that wins; setting `task_always_eager` alone is silently ignored.
    """
    celery_app.conf.CELERY_TASK_ALWAYS_EAGER = eager
    celery_app.conf.task_always_eager = eager


@pytest.fixture(autouse=True, scope="session")
def _celery_in_process():
    """Run tasks in-process during tests; the real-worker test switches this off itself."""
    previous = celery_app.conf.task_always_eager
    set_celery_eager(True)
    yield
    set_celery_eager(previous)


@pytest.fixture
def make_user(db):
    from accounts.models import User

    def make(username: str, role: str = User.Role.SALESPERSON, team=None, **extra) -> User:
        return User.objects.create_user(username=username, password="pw-Secret-123", role=role, team=team, **extra)

    return make


@pytest.fixture
def sales_org(make_user):
    """Two teams, each with a manager and two salespeople, plus an admin."""
    from accounts.models import Team, User

    admin = make_user("admin1", role=User.Role.ADMIN)
    org = {"admin": admin}
    for team_name in ("north", "south"):
        manager = make_user(f"{team_name}_manager", role=User.Role.MANAGER)
        team = Team.objects.create(name=team_name.title(), manager=manager)
        manager.team = team
        manager.save(update_fields=["team"])
        org[f"{team_name}_manager"] = manager
        org[f"{team_name}_team"] = team
        for i in (1, 2):
            org[f"{team_name}_rep{i}"] = make_user(f"{team_name}_rep{i}", team=team)
    return org
