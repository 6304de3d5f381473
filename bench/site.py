"""A throw-away installation for the benches that serve pages: a temporary folder, and a
database of its own on the current database (SQLite in that folder by default; a fresh
PostgreSQL database beside DATABASE_URL's when that is set, dropped afterwards)."""

import contextlib
import os
import shutil
import tempfile
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
