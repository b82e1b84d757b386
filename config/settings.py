"""Consilium settings: one module, driven by environment variables.

Defaults give a working laptop demo (SQLite under var/, a Celery broker that
needs no server). Production sets DATABASE_URL, CELERY_BROKER_URL, SECRET_KEY,
ALLOWED_HOSTS and DEBUG=0, which switches the security settings on.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CONSILIUM_VAR_DIR", BASE_DIR / "var"))


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), not {value!r}")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as error:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from error


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


DEBUG = env_bool("DEBUG", True)

_DEVELOPMENT_SECRET_KEY = "consilium-development-only-key-never-use-in-production-0123456789"
SECRET_KEY = env_str("SECRET_KEY", _DEVELOPMENT_SECRET_KEY if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set in the environment when DEBUG is off")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "csp",
    "trial",
    "randomization",
    "imaging",
    "ai_engine",
    "readings",
    "analysis",
]

MIDDLEWARE = [
    "trial.middleware.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "trial.middleware.SessionRefreshMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks, so it sees the outcome of authentication.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

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
                "trial.context_processors.navigation",
            ],
        },
    },
]

# Database: SQLite file under var/ unless DATABASE_URL is set.
VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASE_URL = env_str("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Server-side parameter binding with prepared statements: PostgreSQL plans
    # a statement that a connection repeats once, not at every call (it pays
    # off under load; see bench/randomization_concurrency.py). Turn it off
    # (DB_PREPARED_STATEMENTS=0) behind a connection pooler in transaction mode.
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool("DB_PREPARED_STATEMENTS", True):
        DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=2)
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            # SQLITE_PATH points another process (a worker started by the
            # tests or the benchmarks) at the same database file.
            "NAME": env_str("SQLITE_PATH", str(VAR_DIR / "consilium.sqlite3")),
            "OPTIONS": {
                # IMMEDIATE takes the write lock when a transaction starts, so two
                # writers queue instead of failing half-way with "database is locked".
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # A file, not memory: an in-memory shared-cache database refuses a
            # second writer at once instead of queueing it, unlike the real one.
            "TEST": {"NAME": str(VAR_DIR / "test_consilium.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The cache holds the API's throttling counters. One per process unless
# CACHE_URL names a Redis server that all web processes share (production).
CACHE_URL = env_str("CACHE_URL", "")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": CACHE_URL}
        if CACHE_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "trial:dashboard"
LOGOUT_REDIRECT_URL = "login"

# Login lockout (django-axes): 5 failures lock the username from that address
# for 30 minutes.
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_int("AXES_COOLOFF_MINUTES", 30) / 60
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

# Sessions end after SESSION_IDLE_SECONDS without a request (21 CFR 11.10(d):
# an unattended workstation must not stay signed in) and at browser close.
# A session in use is written at most once every SESSION_REFRESH_SECONDS
# (trial.middleware.SessionRefreshMiddleware), so it ends between
# SESSION_IDLE_SECONDS − SESSION_REFRESH_SECONDS and SESSION_IDLE_SECONDS
# after its last request, never later.
SESSION_COOKIE_AGE = env_int("SESSION_IDLE_SECONDS", 30 * 60)
SESSION_REFRESH_SECONDS = min(env_int("SESSION_REFRESH_SECONDS", 60), SESSION_COOKIE_AGE // 2)
SESSION_SAVE_EVERY_REQUEST = False
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"

X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# Content-Security-Policy (django-csp): scripts, styles and everything else
# from this origin only, never inline (no 'unsafe-inline', no 'unsafe-eval':
# the pages load their scripts from static/js, and the API docs take the
# split Swagger view, whose set-up script is a URL of its own). Images also
# as data: URLs (the icons in Swagger UI's stylesheet) and blob: URLs (Swagger
# UI shows a PNG the API answered, such as an image preview, from a blob).
# No plugins, no framing, no <base>, forms post here only.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:", "blob:"],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
    if env_bool("BEHIND_TLS_PROXY", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Number of reverse proxies in front of the app whose X-Forwarded-For entries
# are trusted for the client address recorded in the audit trail.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)

LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first, so an anonymous request is told 401 with the scheme to use.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "trial.apis.exception_handler",
    # Anonymous requests that get past the permission check (the token
    # endpoint, trial.apis.TokenApi) are limited per client address: a
    # password guesser meets this besides django-axes' per-username lockout.
    # An anonymous request to any other endpoint is refused (401) before this.
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.AnonRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"anon": env_str("API_ANON_THROTTLE_RATE", "20/minute")},
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Consilium API",
    "DESCRIPTION": "AI second-opinion RCT: enrollment, randomization, imaging, audit trail.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs describe every endpoint: signed-in users only.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI is served from our own static files: nothing is fetched from
    # outside at run time.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Celery: the default broker is kombu's filesystem transport, which needs no
# server, so a laptop demo runs a real worker; production sets a Redis or
# RabbitMQ URL.
# Imaging: uploads over this size are refused; the pixel bound (pixels ×
# frames) is checked from the header before anything is decoded.
IMAGING_MAX_UPLOAD_BYTES = env_int("IMAGING_MAX_UPLOAD_BYTES", 200 * 1024 * 1024)
IMAGING_MAX_PIXELS = env_int("IMAGING_MAX_PIXELS", 150_000_000)
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://localhost/")
CELERY_BROKER_FOLDER = VAR_DIR / "celery-broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    for _sub in ("queue", "processed", "control"):
        (CELERY_BROKER_FOLDER / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_FOLDER / "queue"),
        "data_folder_out": str(CELERY_BROKER_FOLDER / "queue"),
        "processed_folder": str(CELERY_BROKER_FOLDER / "processed"),
        # Exchange bindings; kombu's default is a folder in the working directory.
        "control_folder": str(CELERY_BROKER_FOLDER / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# A web request that publishes a job gives up quickly when the broker is
# down: the job stays in the outbox (ai_engine.jobs) and the sweeper sends it.
CELERY_BROKER_CONNECTION_TIMEOUT = env_int("CELERY_BROKER_CONNECTION_TIMEOUT", 2)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Redis hands an unacknowledged job (its worker vanished) to another
        # worker after this many seconds; longer than any job or retry delay.
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),
        "socket_connect_timeout": 2,
        "socket_timeout": 10,
    }
# Celery's Django fixup closes the database connection around every task
# unless told to reuse it; a new PostgreSQL connection per task costs several
# ms, a fifth of an inference on the CPU. Reuse one for this many tasks:
# before each task, ai_engine.tasks still drops a connection that failed or
# outlived DB_CONN_MAX_AGE (as Django does at each request).
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 100)
# Planned interim looks of the closed reports, as information fractions
# (analysed / planned sample size); the final look is at 1.
ANALYSIS_INTERIM_FRACTIONS = [float(f) for f in env_list("ANALYSIS_INTERIM_FRACTIONS", ["0.3333", "0.6667"])]

CELERY_TASK_ROUTES = {"ai_engine.*": {"queue": "inference"}, "analysis.*": {"queue": "reports"}}
CELERY_WORKER_SEND_TASK_EVENTS = env_bool("CELERY_WORKER_SEND_TASK_EVENTS", False)  # on for Flower
CELERY_BEAT_SCHEDULE = {
    "ai-engine-dispatch-pending": {"task": "ai_engine.dispatch_pending", "schedule": 30.0},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")

# AI engine workers (ai_engine.jobs): device ("" = the GPU when there is one,
# "cuda" = the GPU, falling back to the CPU and saying so), PyTorch threads
# per worker process (0 = PyTorch's default; set it so that processes ×
# threads ≤ cores), images per forward pass, how long a claim lasts before
# another worker may take the job over, retries of transient errors.
AI_DEVICE = env_str("AI_DEVICE", "")
AI_TORCH_THREADS = env_int("AI_TORCH_THREADS", 1)
# 4 suits a CPU (bench/inference_model.py: batches of 2–4 are 10–16 % faster
# per image than single images, batches of 8 slower); a GPU takes more.
AI_INFERENCE_MAX_BATCH = env_int("AI_INFERENCE_MAX_BATCH", 4)
AI_INFERENCE_LEASE_SECONDS = env_int("AI_INFERENCE_LEASE_SECONDS", 600)
AI_INFERENCE_REDISPATCH_SECONDS = env_int("AI_INFERENCE_REDISPATCH_SECONDS", 900)
AI_INFERENCE_MAX_RETRIES = env_int("AI_INFERENCE_MAX_RETRIES", 5)
AI_INFERENCE_RETRY_BASE_SECONDS = env_int("AI_INFERENCE_RETRY_BASE_SECONDS", 2)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # highdicom logs every attribute it copies at INFO.
    "loggers": {"axes": {"level": "WARNING"}, "highdicom": {"level": "WARNING"}},
}
