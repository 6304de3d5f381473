"""A throw-away installation for the benches that serve pages: a temporary folder, and a
database of its own on the current database (SQLite in that folder by default; a fresh
PostgreSQL database beside DATABASE_URL's when that is set, dropped afterwards); and the
two steps of starting a server for it (a free port, waiting until it answers)."""

import contextlib
import os
import shutil
import socket
import tempfile
import time
from urllib.parse import urlparse, urlunparse


@contextlib.contextmanager
def throwaway_site():
    """Set the environment for bench.settings, set Django up and migrate; yields the
    database's vendor ("sqlite" or "postgresql")."""
    folder = tempfile.mkdtemp(prefix="platform-bench-")
    os.environ["PLATFORM_VAR_DIR"] = folder
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    base = os.environ.get("DATABASE_URL", "")
    created = None
    if base.startswith(("postgres://", "postgresql://")):
        created = f"{urlparse(base).path.lstrip('/') or 'postgres'}_bench_{os.getpid()}"
        _postgres(base, f'CREATE DATABASE "{created}"')
        os.environ["DATABASE_URL"] = urlunparse(urlparse(base)._replace(path=f"/{created}"))
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{folder}/db.sqlite3"
    try:
        import django
        from django.core.management import call_command
        from django.db import connection, connections

        django.setup()
        call_command("migrate", verbosity=0)
        yield connection.vendor
        connections.close_all()
    finally:
        if created:
            _postgres(base, f'DROP DATABASE IF EXISTS "{created}" WITH (FORCE)')
            os.environ["DATABASE_URL"] = base
        shutil.rmtree(folder, ignore_errors=True)


def _postgres(url, statement):
    import psycopg

    with psycopg.connect(urlunparse(urlparse(url)._replace(path="/postgres")), autocommit=True) as conn:
        conn.execute(statement)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(port, process, failure, seconds=60):
    """Until the server subprocess on `port` answers its login page; SystemExit(failure),
    the process terminated, if it exits or does not answer within `seconds`."""
    import requests

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(f"http://127.0.0.1:{port}/accounts/login/", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    process.terminate()
    raise SystemExit(failure)
