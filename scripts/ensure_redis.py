"""Check that a Redis answers at REDIS_URL; with --start, start a local one if it does not;
with --stop, stop the one --start started (`make run` does on Ctrl-C).

Only a Redis on this machine is ever started: a remote REDIS_URL that does not answer is
an error to report, not something to paper over. Only a Redis this script started is ever
stopped: it writes var/redis/redis.pid, and --stop ends that process only while it is
still that redis-server (in that folder), never one that was running before.
"""

import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import psutil
import redis

url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
folder = Path(__file__).resolve().parent.parent / "var" / "redis"
pidfile = folder / "redis.pid"


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
    folder.mkdir(parents=True, exist_ok=True)
    port = str(parsed.port or 6379)
    # Redis is a cache of work here (the database is the truth), so nothing is persisted.
    subprocess.run(
        [server, "--daemonize", "yes", "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
         "--dir", str(folder), "--logfile", str(folder / "redis.log"), "--pidfile", str(pidfile)],
        check=True,
    )  # fmt: skip
    for _ in range(50):
        if answers():
            print(f"Started redis-server on port {port} (log: {folder / 'redis.log'})")
            return
        time.sleep(0.1)
    sys.exit(f"redis-server did not answer on port {port}; see {folder / 'redis.log'}")


def stop():
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        return  # this script started none
    pidfile.unlink(missing_ok=True)
    try:
        process = psutil.Process(pid)
        ours = "redis-server" in process.name() and Path(process.cwd()) == folder
    except psutil.Error:
        return  # it stopped already
    if ours:
        process.terminate()
        with contextlib.suppress(psutil.TimeoutExpired):
            process.wait(timeout=10)
        print(f"Stopped the redis-server that `make run` started (pid {pid})")


if "--stop" in sys.argv:
    stop()
    sys.exit(0)
if answers():
    sys.exit(0)
if "--start" not in sys.argv:
    sys.exit(1)
start()
