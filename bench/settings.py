"""Settings for the benches that serve pages: production's (DEBUG off) in a throw-away
folder, with static files found in place (no collectstatic) and fast password hashing.

The bench sets PLATFORM_VAR_DIR and DATABASE_URL (bench.site) before Django reads this;
server processes it starts inherit both."""

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-secret-key-not-for-any-installation")
os.environ.setdefault("DJANGO_DEBUG", "0")

from config.settings import *  # noqa: E402,F403
from config.settings import ALLOWED_HOSTS, STORAGES  # noqa: E402

ALLOWED_HOSTS = [*ALLOWED_HOSTS, "testserver"]
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
