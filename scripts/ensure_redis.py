"""Check that a Redis answers at REDIS_URL; with --start, start a local one if it does not.

Only a Redis on this machine is ever started: a remote REDIS_URL that does not answer is
an error to report, not something to paper over.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import redis

url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def answers():
    try:
        return redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return False


def start():
    parsed = urlparse(url)
    if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"No Redis answers at {url}, and it is not on this machine: start it there.")
    server = shutil.which("redis-server")
    if server is None:
        sys.exit("redis-server is not installed. Install it with: sudo apt-get install -y redis-server")
    folder = Path(__file__).resolve().parent.parent / "var" / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    port = str(parsed.port or 6379)
    # Redis is a cache of work here (the database is the truth), so nothing is persisted.
    subprocess.run(
        [server, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
         "--dir", str(folder), "--logfile", str(folder / "redis.log")],
        check=True,
    )  # fmt: skip
    for _ in range(50):
        if answers():
            print(f"Started redis-server on port {port} (log: {folder / 'redis.log'})")
            return
        time.sleep(0.1)
    sys.exit(f"redis-server did not answer on port {port}; see {folder / 'redis.log'}")


if answers():
    sys.exit(0)
if "--start" not in sys.argv:
    sys.exit(1)
start()
