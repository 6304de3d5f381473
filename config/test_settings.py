"""Settings for the test suite: fast hashing, a throw-away DATA_ROOT, a Redis database
of its own, and an SQLite file (not memory) so worker and server subprocesses share it."""

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


def _start_run(worker):
    """Give this run (or, under `pytest -n N`, this one of pytest-xdist's processes) a
    folder, a Redis database and a channel prefix of its own, in the environment that its
    workers and servers inherit: one process's workers must never take another's jobs.

    What the person set (REDIS_URL, DATABASE_URL, …) is noted once, by the first process,
    as PLATFORM_TEST_BASE_*; process gwN takes Redis database base + N."""
    names = ("PLATFORM_TEST_DIR", "PLATFORM_VAR_DIR", "REDIS_URL", "DATABASE_URL")
    base = {name: os.environ.setdefault(f"PLATFORM_TEST_BASE_{name}", os.environ.get(name, "")) for name in names}
    run_dir = Path(base["PLATFORM_TEST_DIR"] or tempfile.mkdtemp(prefix="platform-test-"))
    if worker:
        run_dir = run_dir / worker
        run_dir.mkdir(parents=True, exist_ok=True)
    redis = urlsplit(base["REDIS_URL"] or "redis://127.0.0.1:6379/13")
    database = int(redis.path.strip("/") or 0) + (int(worker.removeprefix("gw")) if worker else 0)
    os.environ.update(
        PLATFORM_TEST_WORKER=worker,
        PLATFORM_TEST_DIR=str(run_dir),
        PLATFORM_VAR_DIR=base["PLATFORM_VAR_DIR"] or str(run_dir),
        REDIS_URL=urlunsplit(redis._replace(path=f"/{database}")),
        CHANNEL_LAYER_PREFIX=f"test-{run_dir.parent.name}-{worker}" if worker else f"test-{run_dir.name}",
        DATABASE_URL=base["DATABASE_URL"] or f"sqlite:///{run_dir / 'db.sqlite3'}",
    )


# Subprocesses inherit the run's environment and keep it.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if os.environ.get("PLATFORM_TEST_WORKER") != _worker:
    _start_run(_worker)
os.environ.setdefault("DJANGO_DEBUG", "1")

from config.settings import *  # noqa: E402,F403
from config.settings import DATABASES, STATIC_ROOT  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The test database is the same file the subprocesses open by DATABASE_URL.
    DATABASES["default"]["TEST"] = {"NAME": DATABASES["default"]["NAME"]}

# whitenoise warns about a missing STATIC_ROOT; the suite serves static files from the finders.
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
