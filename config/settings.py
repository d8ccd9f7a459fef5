"""Settings for every environment, read from the environment through one `env` object.

With no configuration at all the CRM runs on a SQLite file in the project with Celery
tasks executed in-process, so a newcomer needs no servers. A real deployment sets
DATABASE_URL (PostgreSQL) and REDIS_URL or CELERY_BROKER_URL, turns DEBUG off and gives
a SECRET_KEY; with DEBUG off the development key and an empty ALLOWED_HOSTS are refused.
"""

from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEVELOPMENT_SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default=DEVELOPMENT_SECRET_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

if not DEBUG:
    if SECRET_KEY == DEVELOPMENT_SECRET_KEY or len(SECRET_KEY) < 32:
        raise ImproperlyConfigured("SECRET_KEY must be set to a long random value when DEBUG is off.")
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off.")
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_CONTENT_TYPE_NOSNIFF = True

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "pgtrigger",
    "pghistory",
    "accounts",
    "crm",
    "clv",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "crm.history.HistoryContextMiddleware",  # who made each change, for the change history (PostgreSQL)
    "crm.webhooks.middleware.WebhookKickMiddleware",  # after a write: dispatch webhooks soon
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: a SQLite file by default, PostgreSQL in any real deployment and in CI.
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
IS_POSTGRES = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
FORMS_URLFIELD_ASSUME_HTTPS = True  # Django 6 behaviour now, silences the transition warning
AUTH_USER_MODEL = "accounts.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))

# Redis: broker for Celery, cache for locks and throttling. Absent: tasks run in-process.
REDIS_URL = env.str("REDIS_URL", default="")
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_URL)
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
if not CELERY_BROKER_URL:
    CELERY_BROKER_URL = "memory://"
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL or None)
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# The nightly CLV recomputation; the time of day is configurable.
CLV_NIGHTLY_HOUR = env.int("CLV_NIGHTLY_HOUR", default=2)
CLV_NIGHTLY_MINUTE = env.int("CLV_NIGHTLY_MINUTE", default=30)
CELERY_BEAT_SCHEDULE = {
    "clv-nightly-run": {
        "task": "clv.tasks.run_clv_task",
        "schedule": crontab(hour=CLV_NIGHTLY_HOUR, minute=CLV_NIGHTLY_MINUTE),
    },
    "sync-log-prune": {
        "task": "crm.tasks.prune_sync_log_task",
        "schedule": crontab(hour=4, minute=15),
    },
    "webhooks-dispatch": {  # the backstop of the after-write kick (crm/webhooks)
        "task": "crm.webhooks.dispatch",
        "schedule": env.float("WEBHOOK_DISPATCH_SECONDS", default=30.0),
    },
}

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# REST API v1: tokens or the browser session, problem details, cursor pages, rate limits.
API_PAGE_SIZE = env.int("API_PAGE_SIZE", default=50)
API_MAX_PAGE_SIZE = env.int("API_MAX_PAGE_SIZE", default=500)
API_BULK_MAX = env.int("API_BULK_MAX", default=1000)
API_THROTTLE_RATES = {
    "api": env.str("API_RATE", default="1200/min"),  # per token (or per user for the browser session)
    "login": env.str("API_LOGIN_RATE", default="20/min"),  # token requests, per client address
}
SYNC_TOMBSTONE_RETENTION_DAYS = env.int("SYNC_TOMBSTONE_RETENTION_DAYS", default=90)
# Outgoing webhooks (crm/webhooks): retries with exponential backoff, then disabling.
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=8)  # per delivery: 30 s, 1, 2, 4 ... min apart
WEBHOOK_RETRY_BASE_SECONDS = env.float("WEBHOOK_RETRY_BASE_SECONDS", default=30.0)
WEBHOOK_RETRY_MAX_SECONDS = env.float("WEBHOOK_RETRY_MAX_SECONDS", default=3600.0)
WEBHOOK_DISABLE_AFTER_FAILURES = env.int("WEBHOOK_DISABLE_AFTER_FAILURES", default=20)  # failed attempts in a row
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "crm.api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["crm.api.throttling.ApiThrottle"],
    "DEFAULT_PAGINATION_CLASS": "crm.api.pagination.ApiCursorPagination",
    "DEFAULT_FILTER_BACKENDS": [
        "crm.api.filters.FilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer", "rest_framework.renderers.BrowsableAPIRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "crm.api.problems.exception_handler",
    "PAGE_SIZE": API_PAGE_SIZE,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "CLV CRM API",
    "DESCRIPTION": (
        "Customers, their four lifetime facets, lifetime values and opportunities. Authenticate with "
        "`Authorization: Token <key>` (or `Bearer`), from POST /api/v1/auth/token/. Errors are RFC 9457 "
        "problem details."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

# Opportunity engine (cross-sell and up-sell suggestions).
OPPORTUNITY_MIN_SUPPORT = env.float("OPPORTUNITY_MIN_SUPPORT", default=0.001)  # share of customers holding A and B
OPPORTUNITY_MIN_COUNT = env.int("OPPORTUNITY_MIN_COUNT", default=5)  # customers holding A and B, at least
OPPORTUNITY_MIN_LIFT = env.float("OPPORTUNITY_MIN_LIFT", default=1.0)  # rules must beat the base rate
OPPORTUNITY_TOP_K = env.int("OPPORTUNITY_TOP_K", default=3)  # cross-sell suggestions per customer
UPSELL_UTILISATION_THRESHOLD = env.float("UPSELL_UTILISATION_THRESHOLD", default=0.9)
UPSELL_PERIODS = env.int("UPSELL_PERIODS", default=3)  # consecutive recent usage periods at/over the threshold
UPSELL_HIGH_VALUE_QUANTILE = env.float("UPSELL_HIGH_VALUE_QUANTILE", default=0.8)  # top quintile by value

# The CLV run: horizon, discounting, margin for purchases without a cost, the holdout check.
CLV_HORIZON_MONTHS = env.int("CLV_HORIZON_MONTHS", default=12)
CLV_ANNUAL_DISCOUNT_RATE = env.float("CLV_ANNUAL_DISCOUNT_RATE", default=0.10)
CLV_DEFAULT_MARGIN = env.float("CLV_DEFAULT_MARGIN", default=0.30)
CLV_HOLDOUT_DAYS = env.int("CLV_HOLDOUT_DAYS", default=180)
CLV_MODEL = env.str("CLV_MODEL", default="bgnbd")
# Scoring and writing split into this many customer shards run by Celery workers (1: in the run's process).
CLV_SHARDS = env.int("CLV_SHARDS", default=1)
# A sharded run whose shards have not finished after this long is marked failed by the next run.
CLV_RUN_TIMEOUT_MINUTES = env.int("CLV_RUN_TIMEOUT_MINUTES", default=120)
