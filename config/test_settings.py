"""Settings for the test suite: fast hashing, a throw-away DATA_ROOT, a Redis database
of its own, and an SQLite file (not memory) so worker and server subprocesses share it."""

import os
import tempfile
from pathlib import Path

if "PLATFORM_TEST_DIR" not in os.environ:  # subprocesses inherit the run's folder
    os.environ["PLATFORM_TEST_DIR"] = tempfile.mkdtemp(prefix="platform-test-")
_run_dir = Path(os.environ["PLATFORM_TEST_DIR"])
os.environ.setdefault("PLATFORM_VAR_DIR", str(_run_dir))
os.environ.setdefault("DJANGO_DEBUG", "1")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/13")
os.environ.setdefault("CHANNEL_LAYER_PREFIX", f"test-{_run_dir.name}")
os.environ.setdefault("DATABASE_URL", f"sqlite:///{_run_dir / 'db.sqlite3'}")

from config.settings import *  # noqa: E402,F403
from config.settings import DATABASES, STATIC_ROOT  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The test database is the same file the subprocesses open by DATABASE_URL.
    DATABASES["default"]["TEST"] = {"NAME": DATABASES["default"]["NAME"]}

# whitenoise warns about a missing STATIC_ROOT; the suite serves static files from the finders.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
