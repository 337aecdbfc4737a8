"""Settings, read from the environment (SPEC §10).

With nothing set, the project runs on the embedded default: SQLite under var/, Celery on a
filesystem broker, console email. Production sets DATABASE_URL (PostgreSQL), REDIS_URL,
SECRET_KEY, ALLOWED_HOSTS and the EMAIL_* variables.
"""

import os
from decimal import Decimal
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
# The embedded default is a local demo; production must set its own key.
SECRET_KEY = os.environ.get("SECRET_KEY", "insecure-local-only-" + "x" * 40)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

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
    "django_celery_beat",
    "pgtrigger",
    "credits",
    "invoices",
    "notifications",
    "backoffice",
    "billing_api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "credits_project.urls"
WSGI_APPLICATION = "credits_project.wsgi.application"

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

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        # Persistent connections matter on PostgreSQL (3x the req/s of a trivial endpoint here).
        conn_max_age=int(os.environ.get("CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite serialises writers; wait for the lock instead of failing when web, worker and beat
    # write at once on the embedded default.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE"}
    )

else:
    # Lets psycopg prepare statements on a connection. Django's own cursors bind parameters on
    # the client side and are never prepared; the server-side cursors of the API's credits list
    # (billing_api.credit_list) prepare theirs on first use, so their planning is paid once per
    # connection.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("prepare_threshold", 5)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []

LOGIN_URL = "admin:login"

# --- Email (SPEC §9: expiry warnings). Console unless SMTP is configured.
EMAIL_BACKEND = os.environ.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if os.environ.get("EMAIL_HOST")
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "billing@credits.local")

# --- Credits domain settings
# Maker-checker: a grant above its currency's threshold stays pending until a second staff
# user approves it. Decimal strings, in the currency's own units.
CREDIT_APPROVAL_THRESHOLDS = {
    "USD": Decimal("10000.00"),
    "EUR": Decimal("10000.00"),
    "GBP": Decimal("8000.00"),
    "JPY": Decimal("1500000"),
    "CAD": Decimal("13000.00"),
    "AUD": Decimal("15000.00"),
}
CREDIT_EXPIRY_WARNING_DAYS = [int(d) for d in env_list("CREDIT_EXPIRY_WARNING_DAYS", "30,7,1")]
INVOICE_DUE_DAYS = int(os.environ.get("INVOICE_DUE_DAYS", "30"))
CREDIT_EXPIRE_BATCH_SIZE = int(os.environ.get("CREDIT_EXPIRE_BATCH_SIZE", "50000"))

# --- REST framework (SPEC §8)
REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Billing credits API",
    "DESCRIPTION": "Credits, invoices and the ledger, under /v2/billing/.",
    "VERSION": "2.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# --- Celery (SPEC §9). Redis in production; a filesystem broker needs no server.
REDIS_URL = os.environ.get("REDIS_URL", "")
CELERY_BROKER_URL = REDIS_URL or "filesystem://"
_QUEUE_DIR = VAR_DIR / "queue"
CELERY_BROKER_TRANSPORT_OPTIONS = (
    {}
    if REDIS_URL
    else {
        "data_folder_in": str(_QUEUE_DIR / "data"),
        "data_folder_out": str(_QUEUE_DIR / "data"),
        "processed_folder": str(_QUEUE_DIR / "processed"),
        "store_processed": False,
        "control_folder": str(_QUEUE_DIR / "control"),
    }
)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Jobs (SPEC §9, issue #5): the beat schedule, expiry warnings and their delivery.
# docs/jobs.md explains each value. The schedule below is the source of truth for *when* jobs
# run; django-celery-beat copies it into its tables at beat start, where the finance team sees
# it in the admin (Periodic tasks: last run, run count) and may pause a job or run it now.
from celery.schedules import crontab  # noqa: E402

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share the SQLite file on the embedded default: in WAL mode readers
    # never block the writer nor the writer them, so jobs and page views do not queue on locks.
    DATABASES["default"]["OPTIONS"]["init_command"] = (
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    )
if not REDIS_URL:
    # kombu's filesystem transport does not create its folders.
    for _folder in CELERY_BROKER_TRANSPORT_OPTIONS.values():
        if isinstance(_folder, str):
            Path(_folder).mkdir(parents=True, exist_ok=True)
# No result backend in production: each job's outcome is in the database (ledger, events,
# warnings) and its last run in the admin. Tests point this at Redis to wait for a job's summary.
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_IGNORE_RESULT = CELERY_RESULT_BACKEND is None
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE", "celery")
# Jobs are idempotent, so a job taken by a worker that dies is redelivered rather than lost;
# and a worker takes one long job at a time instead of hoarding the queue.
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# JOBS_EVERY_SECONDS runs every job at that interval instead (demos and the beat test).
_JOBS_EVERY = float(os.environ.get("JOBS_EVERY_SECONDS") or 0) or None


def _job(task: str, schedule, description: str) -> dict:
    every = _JOBS_EVERY or (schedule if isinstance(schedule, float) else None)
    return {
        "task": task,
        "schedule": _JOBS_EVERY or schedule,
        # A run that waited in the queue longer than its own interval (30 s at least: the
        # filesystem broker polls once a second) is dropped: the next one does the same work
        # (every job is idempotent), so a backlog never piles up.
        "options": {"expire_seconds": max(int(every), 30)} if every else {},
        "description": description,
    }


CELERY_BEAT_SCHEDULE = {
    "activate_credits": _job(
        "credits.tasks.activate_credits",
        60.0,
        "Every minute: pending credits whose effective date has come, and referral credits "
        "whose account reached the minimum spend, become usable.",
    ),
    "expire_credits": _job(
        "credits.tasks.expire_credits",
        60.0,
        "Every minute: the unused remainder of credits past their expiry is expired by a "
        "ledger entry (drawdown never uses an expired credit, even before this runs).",
    ),
    "send_expiry_warnings": _job(
        "credits.tasks.send_expiry_warnings",
        60.0,
        "Every minute: customers are warned by email and their partner by webhook 30, 7 and "
        "1 days before a credit expires (once per credit and threshold); failed deliveries "
        "are retried with backoff.",
    ),
    "mark_overdue_invoices": _job(
        "credits.tasks.mark_overdue_invoices",
        crontab(minute="5"),
        "Hourly at :05 UTC: pending invoices past their due date become overdue.",
    ),
    "auto_apply_expiring_credits": _job(
        "credits.tasks.auto_apply_expiring_credits",
        crontab(hour="2", minute="0"),
        "Daily at 02:00 UTC: for accounts that opted in, credits expiring within 7 days are "
        "applied to their pending and overdue invoices.",
    ),
    "compact_grant_summaries": _job(
        "credits.tasks.compact_grant_summaries",
        60.0,
        "Every minute: each account's grant summary deltas (appended by the database on every "
        "change to its credits) are folded into one row per key; no figure changes.",
    ),
}

# For EMAIL_BACKEND=django.core.mail.backends.filebased.EmailBackend (messages kept as files).
EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
AUTO_APPLY_EXPIRING_WITHIN_DAYS = int(os.environ.get("AUTO_APPLY_EXPIRING_WITHIN_DAYS", "7"))
AUTO_APPLY_ACCOUNTS_PER_BATCH = int(os.environ.get("AUTO_APPLY_ACCOUNTS_PER_BATCH", "200"))
# Expiry warnings: deliveries (email, webhook) are retried with exponential backoff: the n-th
# retry waits BACKOFF * 2**(n-1) seconds, at most BACKOFF_MAX, for at most MAX_ATTEMPTS tries.
NOTIFICATIONS_MAX_ATTEMPTS = int(os.environ.get("NOTIFICATIONS_MAX_ATTEMPTS", "8"))
NOTIFICATIONS_BACKOFF_SECONDS = float(os.environ.get("NOTIFICATIONS_BACKOFF_SECONDS", "30"))
NOTIFICATIONS_BACKOFF_MAX_SECONDS = float(
    os.environ.get("NOTIFICATIONS_BACKOFF_MAX_SECONDS", "3600")
)
NOTIFICATIONS_WEBHOOK_TIMEOUT_SECONDS = float(
    os.environ.get("NOTIFICATIONS_WEBHOOK_TIMEOUT_SECONDS", "10")
)
# A delivery claimed by a worker that then died is taken again after this lease.
NOTIFICATIONS_LEASE_SECONDS = int(os.environ.get("NOTIFICATIONS_LEASE_SECONDS", "300"))
NOTIFICATIONS_BATCH_SIZE = int(os.environ.get("NOTIFICATIONS_BATCH_SIZE", "500"))
NOTIFICATIONS_SENDER_NAME = os.environ.get("NOTIFICATIONS_SENDER_NAME", "Billing team")

# --- Partner API (billing_api, SPEC §8): throttling, idempotency, docs. See docs/api.md.
# Per-key request budget. Counted in the "billing_api" cache: Redis when REDIS_URL is set (one
# budget across all web processes), else each process's local memory (the budget is per process).
BILLING_API_THROTTLE_RATE = os.environ.get("BILLING_API_THROTTLE_RATE", "1200/min")
# Idempotency records are kept this long; a key reused after that executes again.
BILLING_API_IDEMPOTENCY_TTL_HOURS = int(os.environ.get("BILLING_API_IDEMPOTENCY_TTL_HOURS", "24"))
CACHES = globals().get("CACHES") or {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
}
CACHES["billing_api"] = (
    {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    if REDIS_URL
    else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "billing_api"}
)
REST_FRAMEWORK.update(
    {
        "EXCEPTION_HANDLER": "billing_api.errors.exception_handler",
        "DEFAULT_RENDERER_CLASSES": ["billing_api.renderers.MoneyJSONRenderer"],
        "DEFAULT_PARSER_CLASSES": ["billing_api.parsers.DecimalJSONParser"],
    }
)
SPECTACULAR_SETTINGS.update(
    {
        "TITLE": "Billing credits API",
        "DESCRIPTION": (
            "Credits, invoices, the ledger and analytics for partner systems, under /v2/billing/. "
            "Authenticate with `Authorization: Bearer <key>`; every POST accepts an "
            "`Idempotency-Key` header; every error is `{'error': {code, message, details}}`."
        ),
        "SCHEMA_PATH_PREFIX": r"/v2/billing",
        "COMPONENT_SPLIT_REQUEST": True,
        "ENUM_NAME_OVERRIDES": {
            "CreditTypeEnum": "credits.models.GrantType",
            "CreditStatusEnum": "credits.models.GrantStatus",
            "LedgerKindEnum": "credits.models.EntryKind",
            "InvoiceStatusEnum": "invoices.models.InvoiceStatus",
            "LineKindEnum": "invoices.models.LineKind",
            "CurrencyEnum": "credits.money.CURRENCY_CHOICES",
            "UsageLimitEnum": "credits.models.UsageLimit",
        },
        # Swagger UI from our own files (drf-spectacular-sidecar), served by billing_api.
        "SWAGGER_UI_DIST": "/v2/billing/docs/assets/swagger-ui-dist",
        "SWAGGER_UI_FAVICON_HREF": "/v2/billing/docs/assets/swagger-ui-dist/favicon-32x32.png",
        "REDOC_DIST": "/v2/billing/docs/assets/redoc",
        "SWAGGER_UI_SETTINGS": {"persistAuthorization": True, "displayRequestDuration": True},
    }
)

# --- Back office (backoffice app): ISO-like date output in the admin.
FORMAT_MODULE_PATH = ["backoffice.formats"]
# The dashboard's report (aggregates over every grant) is cached this long per currency/window.
BACKOFFICE_DASHBOARD_CACHE_SECONDS = int(
    os.environ.get("BACKOFFICE_DASHBOARD_CACHE_SECONDS", "300")
)
