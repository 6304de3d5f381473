"""The cast and the real parts every test shares.

alice owns things, bob is in alice's team, charlie is in no team with her: every page,
API call and WebSocket is tested for the one who must be refused. Workers and servers
run as real subprocesses against the test database, Redis and DATA_ROOT.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.db import connection

from accounts.models import Membership, Team, User

ROOT = Path(__file__).resolve().parent.parent
MNIST_PER_SPLIT = 1000


@pytest.fixture(scope="session", autouse=True)
def clean_redis():
    # The suite has a Redis database of its own (config.test_settings): empty it so no
    # job of an earlier run is picked up by this run's workers.
    redis.Redis.from_url(settings.REDIS_URL).flushdb()


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, which it drops at the end. Connections the consumers'
    threads opened (one per thread, kept for reuse) would still be open then, and PostgreSQL
    refuses to drop a database in use: they are ended first."""
    yield
    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )


@pytest.fixture(scope="session")
def mnist_root():
    """A slice of real MNIST as class folders of PNG files, under the import root."""
    root = Path(settings.DATA_IMPORT_ROOTS[0])
    cache = os.environ.get("MNIST_CACHE_DIR", str(ROOT / "var" / "cache"))
    subprocess.run(
        [sys.executable, "-m", "datasets.mnist_sample", str(root), "--limit", str(MNIST_PER_SPLIT)],
        check=True,
        cwd=ROOT,
        env={**os.environ, "MNIST_CACHE_DIR": cache},
    )
    return root / "mnist"


@pytest.fixture
def team(db):
    return Team.objects.create(name="Vision")


@pytest.fixture
def alice(team):
    user = User.objects.create_user("alice", password="alice-password")
    Membership.objects.create(user=user, team=team, role=Membership.Role.ADMIN)
    return user


@pytest.fixture
def bob(team):
    user = User.objects.create_user("bob", password="bob-password")
    Membership.objects.create(user=user, team=team, role=Membership.Role.MEMBER)
    return user


@pytest.fixture
def charlie(db):
    user = User.objects.create_user("charlie", password="charlie-password")
    Membership.objects.create(user=user, team=Team.objects.create(name="Audio"))
    return user


def subprocess_env(**extra):
    """The environment a worker or server subprocess needs to see this test's database."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.test_settings", **extra}
    db = connection.settings_dict
    # The test database by its own name: pytest-django suffixes it under `pytest -n`.
    if db["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    elif db["ENGINE"].endswith("postgresql"):
        auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
        env["DATABASE_URL"] = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return env


def run_worker(*queues, timeout=300):
    """A real RQ worker in burst mode: it works through what is queued, then exits."""
    subprocess.run(
        [sys.executable, "manage.py", "rqworker", "--burst", *queues],
        check=True,
        cwd=ROOT,
        env=subprocess_env(),
        timeout=timeout,
    )


@pytest.fixture
def worker():
    return run_worker
