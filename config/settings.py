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

# Proxies in front of the app that append to X-Forwarded-For (0: none, the header is ignored and
# the connection's address is the client's). Rate limits and login lockouts key on this address.
NUM_PROXIES = env.int("NUM_PROXIES", default=0)
# Behind a TLS-terminating proxy, the request was HTTPS when the proxy says so.
if env.bool("TRUST_X_FORWARDED_PROTO", default=NUM_PROXIES > 0):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
if not DEBUG:
    if SECRET_KEY == DEVELOPMENT_SECRET_KEY or len(SECRET_KEY) < 32:
        raise ImproperlyConfigured("SECRET_KEY must be set to a long random value when DEBUG is off.")
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("ALLOWED_HOSTS must be set when DEBUG is off.")
    # Production is HTTPS only; each can be turned off for a local trial over plain HTTP.
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000)  # one year
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
    # The header allows listing in browsers' preload lists; listing itself is a request the operator makes.
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
    # The health of a TLS proxy's own checks: paths answered over plain HTTP.
    SECURE_REDIRECT_EXEMPT = env.list("SECURE_REDIRECT_EXEMPT", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django.contrib.postgres",  # trigram search lookups (no-op on SQLite)
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "axes",
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
    "csp.middleware.CSPMiddleware",
    "crm.history.HistoryContextMiddleware",  # who made each change, for the change history (PostgreSQL)
    "crm.webhooks.middleware.WebhookKickMiddleware",  # after a write: dispatch webhooks soon
    "axes.middleware.AxesMiddleware",  # last: turns a locked-out login into its 429 answer
]

# Content-Security-Policy (django-csp): scripts and styles only from our own static files (htmx,
# Chart.js and the app's scripts are vendored there); style attributes stay allowed (the value
# meters set a width); no framing, no plugins, forms post only to us.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "style-src-attr": ["'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# Login lockout (django-axes), for the web login, the admin's and the API's token request alike:
# after AXES_FAILURE_LIMIT wrong passwords for one username, or from one address, further
# attempts (even with the right password) answer 429 until the cool-off has passed. Attempts are
# counted in the database, so every web process shares them, on SQLite and PostgreSQL alike.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = env.float("LOGIN_COOLOFF_MINUTES", default=15) / 60  # hours
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each counted on its own
AXES_RESET_ON_SUCCESS = True
AXES_CLIENT_IP_CALLABLE = "accounts.login_limits.client_address"
AXES_LOCKOUT_CALLABLE = "accounts.login_limits.lockout_response"
AXES_VERBOSE = False

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
# "Recompute now" without a worker: run the CLV task in a background thread and show progress,
# instead of running it inside the request.
CLV_RECOMPUTE_IN_BACKGROUND = env.bool("CLV_RECOMPUTE_IN_BACKGROUND", default=CELERY_TASK_ALWAYS_EAGER)
# Imports from the web page: in a thread of the web process when tasks run in-process, else on a worker.
IMPORT_IN_BACKGROUND = env.bool("IMPORT_IN_BACKGROUND", default=CELERY_TASK_ALWAYS_EAGER)
IMPORT_MAX_BYTES = env.int("IMPORT_MAX_BYTES", default=200 * 1024 * 1024)
IMPORT_FILE_RETENTION_DAYS = env.int("IMPORT_FILE_RETENTION_DAYS", default=7)
if not CELERY_BROKER_URL:
    CELERY_BROKER_URL = "memory://"
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL or None)
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task taken by a worker that dies without acknowledging it (kill -9 of the whole worker, a
# lost host) is handed out again after this many seconds. It must exceed the longest task
# (a full CLV run took 13 s on 1,000,000 customers), or a task still running is handed out
# twice (harmless for the CLV tasks, see docs/reliability.md, but wasted work). kombu's
# default is an hour.
CELERY_VISIBILITY_TIMEOUT = env.int("CELERY_VISIBILITY_TIMEOUT", default=1800)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}

# The nightly CLV recomputation; the time of day is configurable.
CLV_NIGHTLY_HOUR = env.int("CLV_NIGHTLY_HOUR", default=2)
CLV_NIGHTLY_MINUTE = env.int("CLV_NIGHTLY_MINUTE", default=30)
CELERY_BEAT_SCHEDULE = {
    "clv-nightly-run": {
        "task": "clv.tasks.run_clv_task",
        "schedule": crontab(hour=CLV_NIGHTLY_HOUR, minute=CLV_NIGHTLY_MINUTE),
    },
    "clv-fail-abandoned-runs": {  # a run whose worker died is marked failed within minutes
        "task": "clv.tasks.fail_abandoned_runs_task",
        "schedule": crontab(minute="*/5"),
    },
    "sync-log-prune": {
        "task": "crm.tasks.prune_sync_log_task",
        "schedule": crontab(hour=4, minute=15),
    },
    "import-files-prune": {  # uploads left without an import
        "task": "crm.tasks.prune_import_files_task",
        "schedule": crontab(hour=4, minute=30),
    },
    "next-actions-record": {  # what is on each salesperson's list today, for managers' "acted on"
        "task": "crm.tasks.record_next_actions_task",
        "schedule": crontab(hour=env.int("NBA_RECORD_HOUR", default=5), minute=0),
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
# The largest amount (and unit price) of one purchase line the CRM accepts, in the CRM's
# currency: a bound on mistyped values, checked by crm.services for pages, API and imports.
CRM_PURCHASE_AMOUNT_MAX = env.int("CRM_PURCHASE_AMOUNT_MAX", default=100_000_000)
API_THROTTLE_RATES = {
    "api": env.str("API_RATE", default="1200/min"),  # per token (or per user for the browser session)
    "login": env.str("API_LOGIN_RATE", default="20/min"),  # token requests, per client address
    "login_user": env.str("API_LOGIN_USER_RATE", default="10/min"),  # token requests, per username
}
API_TOKENS_PER_USER = env.int("API_TOKENS_PER_USER", default=20)  # live (unrevoked, unexpired) tokens
# Request bodies: at most this many bytes (413 above), checked before the body is read whole.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=1_000_000)
API_BULK_MAX_BODY_BYTES = env.int("API_BULK_MAX_BODY_BYTES", default=10_000_000)
API_MAX_JSON_DEPTH = 32  # nesting of arrays and objects in a request body
API_MAX_TEXT_LENGTH = env.int("API_MAX_TEXT_LENGTH", default=20_000)  # characters of a long text field
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
    "DEFAULT_PARSER_CLASSES": ["crm.api.parsers.BoundedJSONParser"],
    "EXCEPTION_HANDLER": "crm.api.problems.exception_handler",
    "PAGE_SIZE": API_PAGE_SIZE,
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "NUM_PROXIES": NUM_PROXIES,
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
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "crm.api.schema.document_errors",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

# How figures are shown: the currency of every amount (ISO 4217 code) and the one date format of the pages.
CRM_CURRENCY = env.str("CRM_CURRENCY", default="EUR").upper()
CRM_DATE_FORMAT = env.str("CRM_DATE_FORMAT", default="j M Y")

# Opportunity engine (cross-sell and up-sell suggestions).
# A suggestion's chance of being won starts from a Beta(a, b) prior (mean a / (a + b) = 20%) and
# learns from the suggestions of its kind that were won, lost or dismissed.
OPPORTUNITY_WIN_PRIOR_A = env.float("OPPORTUNITY_WIN_PRIOR_A", default=1.0)
OPPORTUNITY_WIN_PRIOR_B = env.float("OPPORTUNITY_WIN_PRIOR_B", default=4.0)
# A rule's win and dismissal rates are shrunk toward its kind's with this many pseudo-decisions.
OPPORTUNITY_RULE_PRIOR_STRENGTH = env.float("OPPORTUNITY_RULE_PRIOR_STRENGTH", default=10.0)
# Days a dismissal keeps a suggestion away; "already has it"/"not relevant" hold back the product for the customer.
CRM_SUPPRESS_DAYS = env.int("CRM_SUPPRESS_DAYS", default=180)
OPPORTUNITY_MIN_SUPPORT = env.float("OPPORTUNITY_MIN_SUPPORT", default=0.001)  # share of customers holding A and B
OPPORTUNITY_MIN_COUNT = env.int("OPPORTUNITY_MIN_COUNT", default=5)  # customers holding A and B, at least
OPPORTUNITY_MIN_LIFT = env.float("OPPORTUNITY_MIN_LIFT", default=1.0)  # rules must beat the base rate
OPPORTUNITY_TOP_K = env.int("OPPORTUNITY_TOP_K", default=3)  # cross-sell suggestions per customer
# Cross-sell from purchase lines (united with holdings): see docs/recommendations.md.
OPPORTUNITY_PURCHASE_LOOKBACK_DAYS = env.int("OPPORTUNITY_PURCHASE_LOOKBACK_DAYS", default=730)
OPPORTUNITY_PURCHASE_MODEL = env.str("OPPORTUNITY_PURCHASE_MODEL", default="adoption")  # chosen offline
OPPORTUNITY_ITEM_ALPHA = env.float("OPPORTUNITY_ITEM_ALPHA", default=0.5)  # 0.5 = cosine, 1 = confidence
OPPORTUNITY_ITEM_SHRINKAGE = env.float("OPPORTUNITY_ITEM_SHRINKAGE", default=10.0)  # pseudo-customers
# adoption model: learns what customers first buy within this many days; its EASE regularisation is this
# many times the mean number of customers per item
OPPORTUNITY_ADOPTION_WINDOW_DAYS = env.int("OPPORTUNITY_ADOPTION_WINDOW_DAYS", default=30)
OPPORTUNITY_ADOPTION_EASE_STRENGTH = env.float("OPPORTUNITY_ADOPTION_EASE_STRENGTH", default=1.5)
OPPORTUNITY_PURCHASE_LEVEL = env.str("OPPORTUNITY_PURCHASE_LEVEL", default="auto")  # auto|product|family|category
OPPORTUNITY_PRODUCT_LEVEL_MAX = env.int("OPPORTUNITY_PRODUCT_LEVEL_MAX", default=2000)  # auto: products above -> groups
# Next best action (crm/selectors/next_actions.py). A timely call saves a customer (or a renewal)
# with a probability that starts from a Beta(a, b) prior (mean a / (a + b) = 25%) and learns from
# the retention calls made: saved when the customer bought again within NBA_SAVE_WINDOW_DAYS.
NBA_SAVE_PRIOR_A = env.float("NBA_SAVE_PRIOR_A", default=2.0)
NBA_SAVE_PRIOR_B = env.float("NBA_SAVE_PRIOR_B", default=6.0)
NBA_SAVE_WINDOW_DAYS = env.int("NBA_SAVE_WINDOW_DAYS", default=90)
NBA_MIN_P_ALIVE_DROP = env.float("NBA_MIN_P_ALIVE_DROP", default=0.05)  # a smaller fall is noise, not a signal
NBA_LIMIT_PER_KIND = env.int("NBA_LIMIT_PER_KIND", default=50)  # items of each kind on one salesperson's list
NBA_ACTED_WINDOW_DAYS = env.int("NBA_ACTED_WINDOW_DAYS", default=30)  # the "acted on" period managers see
UPSELL_UTILISATION_THRESHOLD = env.float("UPSELL_UTILISATION_THRESHOLD", default=0.9)
UPSELL_PERIODS = env.int("UPSELL_PERIODS", default=3)  # consecutive recent usage periods at/over the threshold
UPSELL_HIGH_VALUE_QUANTILE = env.float("UPSELL_HIGH_VALUE_QUANTILE", default=0.8)  # top quintile by value

# The CLV run: horizon, discounting, margin for purchases without a cost, the holdout check.
CLV_HORIZON_MONTHS = env.int("CLV_HORIZON_MONTHS", default=12)
CLV_ANNUAL_DISCOUNT_RATE = env.float("CLV_ANNUAL_DISCOUNT_RATE", default=0.10)
CLV_DEFAULT_MARGIN = env.float("CLV_DEFAULT_MARGIN", default=0.30)
CLV_HOLDOUT_DAYS = env.int("CLV_HOLDOUT_DAYS", default=180)
# "auto": fit BG/NBD, MBG/NBD, Pareto/NBD and MBG/CNBD-k on the calibration window and use the one
# with the best holdout score (docs/clv-regular-buyers.md); or one of them by name; or "bgbb" for
# one purchase opportunity per CLV_PERIOD_DAYS (annual events, yearly donations).
CLV_MODEL = env.str("CLV_MODEL", default="auto")
CLV_PERIOD_DAYS = env.int("CLV_PERIOD_DAYS", default=365)
# Calibration customers the candidates are fitted and compared on (a uniform sample above this).
CLV_CHOICE_SAMPLE = env.int("CLV_CHOICE_SAMPLE", default=100_000)
# Parameter sets (the MLE and draws from its asymptotic normal) mixed into each 80% interval.
CLV_INTERVAL_DRAWS = env.int("CLV_INTERVAL_DRAWS", default=10)
# BLAS/OpenMP threads while the run fits and scores (numpy's default, one per core, is slower on a busy machine).
CLV_BLAS_THREADS = env.int("CLV_BLAS_THREADS", default=1)
# Scoring and writing split into this many customer shards run by Celery workers (1: in the run's process).
CLV_SHARDS = env.int("CLV_SHARDS", default=1)
# A sharded run whose shards have not finished after this long is marked failed by the next run.
CLV_RUN_TIMEOUT_MINUTES = env.int("CLV_RUN_TIMEOUT_MINUTES", default=120)
# A new run waits this long for the run lock before it gives way to the run holding it (the
# session of a worker killed a moment ago lets go of the lock within about a second).
CLV_RUN_LOCK_WAIT_SECONDS = env.float("CLV_RUN_LOCK_WAIT_SECONDS", default=10.0)
# The run task retries transient database errors (a lost connection, a failover) after about
# this many seconds, doubling each time, at most CLV_RUN_RETRIES times.
CLV_RETRY_BACKOFF_SECONDS = env.int("CLV_RETRY_BACKOFF_SECONDS", default=30)
CLV_RUN_RETRIES = env.int("CLV_RUN_RETRIES", default=3)
# A run handed out again after its worker died, when this many runs in a row lost their
# worker within CLV_RUN_TIMEOUT_MINUTES, is not started again (it would likely kill the
# next worker too, e.g. out of memory); the next scheduled or manual run tries again.
CLV_RUN_MAX_WORKER_LOSSES = env.int("CLV_RUN_MAX_WORKER_LOSSES", default=3)
