"""Settings for the platform, read from the environment.

Every value has a safe default for one machine; production sets DJANGO_DEBUG=0,
DJANGO_SECRET_KEY, DJANGO_ALLOWED_HOSTS and DATABASE_URL.
"""

import os
from pathlib import Path

import dj_database_url
import psutil
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name, default):
    value = os.environ.get(name, default)
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0), not {value!r}")


def envint(name, default):
    value = os.environ.get(name, default)
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}") from None


def envlist(name, default, sep=","):
    return [item.strip() for item in os.environ.get(name, default).split(sep) if item.strip()]


DEBUG = envbool("DJANGO_DEBUG", "0")
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG is off")
    SECRET_KEY = "insecure-development-key"

ALLOWED_HOSTS = envlist("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("DJANGO_CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_rq",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
    "jobs",
    "datasets",
    "models",
    "training",
    "evaluations",
    "quotas",
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
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    # Keeps the request at hand for the audit log's address (accounts.audit).
    "accounts.audit.AuditMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
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

# --- Storage -------------------------------------------------------------------
VAR_DIR = Path(os.environ.get("PLATFORM_VAR_DIR", BASE_DIR / "var"))
# Datasets, snapshots and uploads. A shared filesystem when workers run on several hosts.
DATA_ROOT = Path(os.environ.get("DATA_ROOT", VAR_DIR / "data"))
# The only server folders a user may name as a dataset source.
DATA_IMPORT_ROOTS = [Path(p) for p in envlist("DATA_IMPORT_ROOTS", str(VAR_DIR / "samples"), sep=os.pathsep)]
# Classify-one fetches URLs only from public addresses; these hosts ("host" or "host:port",
# comma-separated) are let through too, e.g. an image store on the private network.
CLASSIFY_URL_ALLOWED_HOSTS = envlist("CLASSIFY_URL_ALLOWED_HOSTS", "")

# What one experiment may take, checked on the form before it is queued: a network
# needing more would only fail on a worker (or starve it). The default suits a CPU worker
# on this machine; set the smallest training device's memory where workers have GPUs.
TRAINING_MAX_MEMORY_BYTES = envint("TRAINING_MAX_MEMORY_BYTES", str(psutil.virtual_memory().total // 4))
TRAINING_MAX_PARAMETERS = envint("TRAINING_MAX_PARAMETERS", "500000000")
# The most images one evaluation (classify many) takes: a longer list is refused with the figure.
EVALUATION_MAX_IMAGES = envint("EVALUATION_MAX_IMAGES", "100000")

# XLA's persistent compilation cache: the second run of a network starts at once.
JAX_CACHE_DIR = Path(os.environ.get("JAX_CACHE_DIR", VAR_DIR / "jax-cache"))
# A running job (a build, an experiment) whose heartbeat is older than this lost its worker
# (seen from another host; a worker on the same host knows at once); it is queued again to
# resume, up to JOB_MAX_ATTEMPTS runs in all.
JOB_STALE_SECONDS = envint("JOB_STALE_SECONDS", "15")
JOB_MAX_ATTEMPTS = envint("JOB_MAX_ATTEMPTS", "3")
# An open socket notices a change of access (a sharing setting, a membership, a logout) within
# a couple of seconds: every save of those rows bumps a counter in Redis that each web process
# reads for all of its sockets. It asks the database at least this often anyway, for what no
# save announces (a session or token that expired, a row changed by raw SQL).
ACCESS_RECHECK_SECONDS = envint("ACCESS_RECHECK_SECONDS", "30")

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=envint("DATABASE_CONN_MAX_AGE", "0"),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web and workers write the same file. A lock is waited for (timeout) rather than
    # failed at once; readers never block the writer (WAL); and a transaction takes the
    # write lock when it begins (IMMEDIATE): one that read first and then asked for it
    # could deadlock with another writer, and SQLite answers that with "database is
    # locked" at once, without waiting (an epoch's update_or_create in a worker, while
    # the web server writes a session).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        timeout=20,
        transaction_mode="IMMEDIATE",
        init_command="PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    )
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and envint("DATABASE_POOL_SIZE", "0") > 0:
    # The web server reuses PostgreSQL connections through psycopg's pool, not
    # CONN_MAX_AGE: under ASGI every request's sync code runs in a thread of its own
    # (sync_to_async, one thread-sensitive context per request), and a connection kept by
    # CONN_MAX_AGE belongs to that thread, so it is never reused and only leaks until the
    # server hits max_connections. A pooled connection goes back to the pool when Django
    # closes it at the end of the request. Only the web process sets DATABASE_POOL_SIZE
    # (scripts/web.sh): RQ forks a work-horse per job, and a child must not inherit the
    # parent's pooled sockets and pool threads.
    if DATABASES["default"]["CONN_MAX_AGE"]:
        raise ImproperlyConfigured("DATABASE_POOL_SIZE and DATABASE_CONN_MAX_AGE cannot both be set")
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": envint("DATABASE_POOL_SIZE", "0"),
        # A request waits this long for a free connection, then fails rather than hangs.
        "timeout": envint("DATABASE_POOL_TIMEOUT", "10"),
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "console"
LOGOUT_REDIRECT_URL = "login"

# --- Sign-in: the organisation's directory (README, "Single sign-on") ---------------------
# Passwords first (so a test's force_login and the break-glass superuser use them), then
# LDAP, then OpenID Connect; each answers no one until its settings below are given.
AUTHENTICATION_BACKENDS = [
    "accounts.backends.PasswordBackend",
    "accounts.ldap.DirectoryLDAPBackend",
    "accounts.oidc.DirectoryOIDCBackend",
]
# LOCAL_LOGIN=0: the platform's own passwords log in superusers only (the break-glass).
LOCAL_LOGIN = envbool("LOCAL_LOGIN", "1")
# Refused passwords lock further tries for LOGIN_LOCKOUT_SECONDS, per account and per address.
LOGIN_FAILURES_PER_ACCOUNT = envint("LOGIN_FAILURES_PER_ACCOUNT", "5")
LOGIN_FAILURES_PER_ADDRESS = envint("LOGIN_FAILURES_PER_ADDRESS", "20")
LOGIN_LOCKOUT_SECONDS = envint("LOGIN_LOCKOUT_SECONDS", "300")
# Who may create teams on /teams/: "everyone" who can log in, or "admins" (superusers) only.
TEAM_CREATION = os.environ.get("TEAM_CREATION", "everyone")
if TEAM_CREATION not in ("everyone", "admins"):
    raise ImproperlyConfigured(f"TEAM_CREATION must be 'everyone' or 'admins', not {TEAM_CREATION!r}")

# OpenID Connect (accounts.oidc): the endpoints come from <issuer>/.well-known/openid-configuration.
OIDC_ISSUER = os.environ.get("OIDC_ISSUER", "").rstrip("/")
OIDC_RP_CLIENT_ID = os.environ.get("OIDC_CLIENT_ID", "")
OIDC_RP_CLIENT_SECRET = os.environ.get("OIDC_CLIENT_SECRET", "")
OIDC_NAME = os.environ.get("OIDC_NAME", "your organisation")
OIDC_TEAMS_CLAIM = os.environ.get("OIDC_TEAMS_CLAIM", "groups")
OIDC_ADMIN_SUFFIX = os.environ.get("OIDC_ADMIN_SUFFIX", ":admin")
OIDC_VIEWER_SUFFIX = os.environ.get("OIDC_VIEWER_SUFFIX", ":viewer")
OIDC_USERNAME_CLAIM = os.environ.get("OIDC_USERNAME_CLAIM", "preferred_username")
OIDC_RP_SCOPES = os.environ.get("OIDC_SCOPES", "openid email profile")
OIDC_RP_SIGN_ALGO = os.environ.get("OIDC_RP_SIGN_ALGO", "RS256")
# Explicit endpoints win over discovery, for a provider that publishes none.
OIDC_OP_AUTHORIZATION_ENDPOINT = os.environ.get("OIDC_OP_AUTHORIZATION_ENDPOINT", "")
OIDC_OP_TOKEN_ENDPOINT = os.environ.get("OIDC_OP_TOKEN_ENDPOINT", "")
OIDC_OP_USER_ENDPOINT = os.environ.get("OIDC_OP_USER_ENDPOINT", "")
OIDC_OP_JWKS_ENDPOINT = os.environ.get("OIDC_OP_JWKS_ENDPOINT", "")
OIDC_OP_LOGOUT_ENDPOINT = os.environ.get("OIDC_OP_LOGOUT_ENDPOINT", "")
# Log out of a session an OpenID login made logs out at the provider too (its end-session
# endpoint, which sends the browser back to the login page: register that address with it).
OIDC_LOGOUT_AT_PROVIDER = envbool("OIDC_LOGOUT_AT_PROVIDER", "1")
OIDC_OP_LOGOUT_URL_METHOD = "accounts.oidc.logout_url"
# The login's ID token stays in the session, as the provider's hint of whom to log out.
OIDC_STORE_ID_TOKEN = True
OIDC_USE_PKCE = True
OIDC_USE_NONCE = True
OIDC_TIMEOUT = envint("OIDC_TIMEOUT", "10")
OIDC_VERIFY_SSL = envbool("OIDC_VERIFY_SSL", "1")
# How the client secret reaches the token endpoint, at a login and at each refresh between
# logins (accounts.oidc_refresh): in the form (client_secret_post, the default) or, with 1, in
# an Authorization header (client_secret_basic, the method RFC 6749 requires providers to take).
OIDC_TOKEN_USE_BASIC_AUTH = envbool("OIDC_TOKEN_USE_BASIC_AUTH", "0")

# LDAP (accounts.ldap, django-auth-ldap): a search bind, then a bind as the user.
LDAP_SERVER_URI = os.environ.get("LDAP_SERVER_URI", "")
LDAP_BIND_DN = os.environ.get("LDAP_BIND_DN", "")
LDAP_BIND_PASSWORD = os.environ.get("LDAP_BIND_PASSWORD", "")
LDAP_START_TLS = envbool("LDAP_START_TLS", "0")
LDAP_USER_SEARCH_BASE = os.environ.get("LDAP_USER_SEARCH_BASE", "")
LDAP_USER_FILTER = os.environ.get("LDAP_USER_FILTER", "(uid=%(user)s)")
LDAP_GROUP_SEARCH_BASE = os.environ.get("LDAP_GROUP_SEARCH_BASE", "")
LDAP_GROUP_TYPE = os.environ.get("LDAP_GROUP_TYPE", "groupOfNames")
if LDAP_GROUP_TYPE not in ("groupOfNames", "groupOfUniqueNames", "posixGroup"):
    raise ImproperlyConfigured(
        f"LDAP_GROUP_TYPE must be groupOfNames, groupOfUniqueNames or posixGroup, not {LDAP_GROUP_TYPE!r}"
    )
LDAP_GROUP_FILTER = os.environ.get("LDAP_GROUP_FILTER", f"(objectClass={LDAP_GROUP_TYPE})")
LDAP_ADMIN_SUFFIX = os.environ.get("LDAP_ADMIN_SUFFIX", OIDC_ADMIN_SUFFIX)
LDAP_VIEWER_SUFFIX = os.environ.get("LDAP_VIEWER_SUFFIX", OIDC_VIEWER_SUFFIX)
LDAP_TIMEOUT = envint("LDAP_TIMEOUT", "10")
# Seconds between the rounds of the Procfile's `directory` process: each looks every LDAP
# account up (accounts.ldap_sync) and asks the OpenID provider about every session it logged in
# (accounts.oidc_refresh), so a person removed from either loses access within this long.
DIRECTORY_SYNC_SECONDS = envint("DIRECTORY_SYNC_SECONDS", "300")
if DIRECTORY_SYNC_SECONDS < 1:
    raise ImproperlyConfigured(f"DIRECTORY_SYNC_SECONDS must be at least 1, not {DIRECTORY_SYNC_SECONDS}")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "staticfiles"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
if DEBUG:
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}

# Uploads to classify are read in memory; a cap keeps one request from eating the box.
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("DATA_UPLOAD_MAX_MEMORY_SIZE", str(20 * 1024 * 1024))
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE

# --- Redis: RQ queues and the channel layer ----------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

# Redis publish/subscribe by default: an event to a group is published once, and each web
# process hands it to all of its sockets in that group from memory. channels-redis' core
# layer instead writes one copy per socket into Redis and pops them one by one (100
# watchers of a run, 100 copies), and drops what overflows a socket's queue of 100.
# Neither keeps what a socket missed while Redis was away: the pages refill every gap by
# its sequence number (jobs.events). CHANNEL_LAYER=core selects the core layer.
_CHANNEL_BACKENDS = {
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    "core": "channels_redis.core.RedisChannelLayer",
}
CHANNEL_LAYER = os.environ.get("CHANNEL_LAYER", "pubsub")
if CHANNEL_LAYER not in _CHANNEL_BACKENDS:
    raise ImproperlyConfigured(f"CHANNEL_LAYER must be one of {', '.join(_CHANNEL_BACKENDS)}, not {CHANNEL_LAYER!r}")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": _CHANNEL_BACKENDS[CHANNEL_LAYER],
        "CONFIG": {
            # A consumer of the core layer waits for its messages in a 5 s blocking pop
            # (channels-redis' brpop_timeout), and redis-py reads with a 5 s socket timeout
            # by default: the read lost that race on every idle socket, which then closed
            # with 1011. The read must outlast the pop; keepalive still notices a dead Redis.
            "hosts": [
                {"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5, "socket_keepalive": True}
            ],
            "prefix": os.environ.get("CHANNEL_LAYER_PREFIX", "asgi"),
        },
    }
}

# Every worker notices dead and lost jobs (jobs.worker); training workers also own a device.
RQ = {"WORKER_CLASS": "jobs.worker.Worker"}
# "datasets" runs on CPU workers; "training" on one worker per GPU.
RQ_QUEUES = {
    "datasets": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": envint("DATASET_JOB_TIMEOUT", "86400")},
    "training": {"URL": REDIS_URL, "DEFAULT_TIMEOUT": envint("TRAINING_JOB_TIMEOUT", "604800")},
}

# --- API -----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Named, hashed, optionally read-only and expiring tokens (accounts.tokens).
        "accounts.tokens.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated", "accounts.tokens.ReadOnlyToken"],
    "DEFAULT_PAGINATION_CLASS": "jobs.pagination.Pagination",
    "PAGE_SIZE": 50,
    # One error shape for every endpoint: {"detail": "…", "errors": {"field": ["…"]}}.
    "EXCEPTION_HANDLER": "jobs.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "jobs.schema.Schema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Deep Learning Platform API",
    "DESCRIPTION": "Datasets, experiments and their logs, for scripts. Authenticate with "
    "`Authorization: Token <key>` (the key is on /accounts/token/) or the browser session. Lists are "
    "paged (`limit`, `offset`; the answer has the total `count`). Every error answers "
    '`{"detail": "…", "errors": {"field": ["…"]}}`.',
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # Request bodies get components of their own, so that uploads show as files.
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from the installed drf-spectacular-sidecar: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # The same values in a dataset's words ("Building", "Ready") and a job's.
    "ENUM_NAME_OVERRIDES": {
        "DatasetStatusEnum": "datasets.models.Dataset.Status",
        "JobStatusEnum": "jobs.models.JobStatus",
    },
}

# --- Production hardening (checked by `manage.py check --deploy`) ------------------------
if not DEBUG:
    SESSION_COOKIE_SECURE = envbool("DJANGO_SECURE_COOKIES", "0")
    CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
    SECURE_SSL_REDIRECT = envbool("DJANGO_SSL_REDIRECT", "0")
    SECURE_HSTS_SECONDS = envint("DJANGO_HSTS_SECONDS", "0")
    SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", "0")
    SECURE_HSTS_PRELOAD = envbool("DJANGO_HSTS_PRELOAD", "0")
    # Only a proxy that sets X-Forwarded-Proto itself, overwriting what the client sent,
    # may be believed; without one any client could claim HTTPS with that header.
    if envbool("DJANGO_BEHIND_PROXY", "0"):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Email: password resets ------------------------------------------------------------
# Without a mail server the messages go to the log, where an administrator can find a
# reset link, instead of vanishing while the page says they were sent.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = envint("EMAIL_PORT", "587")
    EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
    EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
    EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", "1")
else:
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "webmaster@localhost")


def _forbidden_in_one_line(record):
    # A 403 is the access rule refusing someone, not a fault of the code: its traceback
    # would bury the real errors in the log.
    if getattr(record, "status_code", None) == 403:
        record.exc_info = record.exc_text = None
    return True


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"forbidden_in_one_line": {"()": "django.utils.log.CallbackFilter", "callback": _forbidden_in_one_line}},
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"filters": ["forbidden_in_one_line"]}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}
