"""How long does a live event take from the worker that sends it to the browsers that
watch? From `jobs.events.broadcast` in a worker-side process to its arrival at 1, 10 and
100 WebSocket watchers of one experiment, through the web tier as `make run` serves it
(scripts/web.sh: uvicorn, one process per core; `--server daphne`: one daphne process) and
the Redis channel layer of the settings (CHANNEL_LAYER), as the experiment page's socket
receives it (access re-checked, sequence numbered).

Each event carries the time it was sent; each watcher notes when it arrived. The watchers
are plain WebSocket clients in this process (API tokens, so no browser is needed), the
sender a thread with its own event loop, as a worker's broadcast is. Events go out every
0.5 s, as a running job sends its progress; p50 and p99 over all arrivals are printed,
with the goal at 100 watchers (p50 < 50 ms, p99 < 250 ms). An event that never arrives
(a socket closed, a queue overflowed) is counted and printed.

    python -m bench.push_latency [--quick] [--server uvicorn|daphne]
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.site import free_port, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
WATCHERS = (1, 10, 100)
GOAL = {"p50": 0.050, "p99": 0.250}
INTERVAL = 0.5


def setup_django(run_dir):
    os.environ["PLATFORM_TEST_DIR"] = str(run_dir)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.test_settings")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=ROOT, check=True, env=os.environ.copy())
    import django

    django.setup()


def fixtures():
    from accounts import tokens
    from accounts.models import User
    from datasets.models import Dataset
    from training.models import Experiment

    user = User.objects.create_user("bench", password="bench-password-1")
    dataset = Dataset.objects.create(owner=user, name="bench", source_folder="/nowhere", status="done",
                                     classes=["0", "1"], counts={"train": [1, 1], "val": [1, 1]})  # fmt: skip
    experiment = Experiment.objects.create(owner=user, dataset=dataset, name="bench", status="running")
    _, secret = tokens.create(user, "bench")
    return experiment, secret


def start_server(run_dir, server):
    """The web tier as `make run` serves it (scripts/web.sh: uvicorn, one process per core),
    or one daphne process (the test suite's live server)."""
    port = free_port()
    log = open(Path(run_dir) / f"{server}.log", "w")
    if server == "uvicorn":
        command = ["bash", "scripts/web.sh"]
        env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1"}
    else:
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]
        env = os.environ.copy()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_until_serving(port, process, f"{server} did not start; see {run_dir}/{server}.log")
    return process, port


async def watch(url, secret, count, events, ready, arrivals):
    """`count` sockets, opened one after another (a storm of handshakes measures the
    handshakes); each records the delay of every bench event it receives."""
    from websockets.asyncio.client import connect

    headers = {"Authorization": f"Token {secret}", "Origin": url.replace("ws://", "http://").split("/ws/")[0]}

    async def read(ws):
        got = 0
        async with ws:
            while got < events:
                message = json.loads(await ws.recv())
                if message.get("type") == "bench":
                    arrivals.append(time.time() - message["sent"])
                    got += 1

    readers = []
    for _ in range(count):
        ws = await connect(url, additional_headers=headers, open_timeout=60, max_queue=None)
        await ws.recv()  # the opening sync: the socket joined the group
        readers.append(asyncio.ensure_future(read(ws)))
        ready.release()
    await asyncio.gather(*readers, return_exceptions=True)


def measure(port, experiment, secret, count, events):
    from jobs.events import broadcast

    url = f"ws://127.0.0.1:{port}/ws/experiments/{experiment.pk}/"
    arrivals = []
    ready = threading.Semaphore(0)
    watchers = threading.Thread(
        target=lambda: asyncio.run(watch(url, secret, count, events, ready, arrivals)), daemon=True
    )
    watchers.start()
    for _ in range(count):
        if not ready.acquire(timeout=300):
            raise SystemExit("the watchers did not connect")
    time.sleep(0.5)
    for index in range(events):
        broadcast(experiment.group_name, {"type": "bench", "index": index, "sent": time.time()})
        time.sleep(INTERVAL)
    watchers.join(timeout=60)
    arrivals = sorted(arrivals)
    p99 = arrivals[min(len(arrivals) - 1, int(0.99 * len(arrivals)))]
    return statistics.median(arrivals), p99, count * events - len(arrivals)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer events per watcher count")
    parser.add_argument("--server", choices=["uvicorn", "daphne"], default="uvicorn",
                        help="uvicorn as `make run` serves (default), or one daphne process")  # fmt: skip
    args = parser.parse_args()
    events = 10 if args.quick else 40
    with tempfile.TemporaryDirectory(prefix="push-latency-") as run_dir:
        setup_django(run_dir)
        experiment, secret = fixtures()
        from django.conf import settings

        server, port = start_server(run_dir, args.server)
        processes = int(os.environ.get("WEB_PROCESSES") or os.cpu_count()) if args.server == "uvicorn" else 1
        print(f"{args.server}, {processes} web process{'es' if processes != 1 else ''}, "
              f"{settings.CHANNEL_LAYERS['default']['BACKEND'].rsplit('.', 1)[1]}", flush=True)  # fmt: skip
        try:
            for count in WATCHERS:
                p50, p99, lost = measure(port, experiment, secret, count, events)
                goal = ""
                if count == WATCHERS[-1]:
                    met = p50 < GOAL["p50"] and p99 < GOAL["p99"]
                    goal = f"  (goal p50 < 50 ms, p99 < 250 ms: {'met' if met else 'NOT met'})"
                print(f"push latency, {count:>3} watcher{'s' if count > 1 else ' '}: "
                      f"p50 {1000 * p50:6.1f} ms, p99 {1000 * p99:6.1f} ms{goal}"
                      + (f"; {lost} events never arrived" if lost else ""), flush=True)  # fmt: skip
        finally:
            server.terminate()
            server.wait(timeout=20)


if __name__ == "__main__":
    main()
