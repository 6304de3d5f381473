"""A load drill against the web tier as `make run` starts it (scripts/web.sh: uvicorn,
one process per core): logged-in users browsing while others watch a running experiment.

- USERS people (default 20), each in a thread of a process of their own, load the console and
  experiment pages one after the other: as fast as they are answered (the default, a
  closed loop: the drill then measures what the web tier can serve), or --think seconds
  apart on average (a person's pace: the drill then measures how long a page takes under
  that load);
- WATCHERS sockets (default 100) on /ws/experiments/<id>/ of one running experiment,
  each with its own user's session and the page's Origin;
- a loop standing in for the training worker broadcasts a progress event every 0.1 s
  to the experiment's group (jobs.events.broadcast, as the worker does), each stamped
  with the time it was sent.

Prints requests/s, page p50/p95, event latency p50/p99 (send to receipt) and the events
lost (every watcher should get every one). A socket from another site's Origin must be
refused. It lasts --warmup (default 5) plus --seconds (default 30; the whole drill stays
under a minute on 2 cores, start-up and filling included). Pages and events of the
warm-up, when every user's first page arrives at once at processes that have served
nothing yet, are counted apart and printed on a line of their own.

    python -m bench.load_drill [--quick] [--users 20] [--watchers 100] [--seconds 30]
                               [--warmup 5] [--think 0]
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import requests

from bench.scale_bench import populate
from bench.site import free_port, throwaway_site, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
EVENT_INTERVAL = 0.1


def sessions(count):
    """Session cookies of `count` members of bob's team."""
    from django.test import Client

    from accounts.models import Membership, Team, User

    team = Team.objects.get(name="Vision")
    cookies = []
    for i in range(count):
        user = User.objects.create_user(f"viewer{i:03d}")
        Membership.objects.create(user=user, team=team, role=Membership.Role.MEMBER)
        client = Client()
        client.force_login(user)
        cookies.append(client.cookies["sessionid"].value)
    return cookies


def start_server(port, processes):
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "WEB_PROCESSES": str(processes)}
    server = subprocess.Popen(
        ["bash", "scripts/web.sh", "--log-level", "warning", "--timeout-graceful-shutdown", "2"],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        wait_until_serving(port, server, "the web tier did not answer within 60 s")
    except SystemExit:
        stop_server(server)
        raise
    return server


def stop_server(server):
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)


def browsing(base, cookies, urls, warm_at, until, args, results):
    """The users, a thread each, until `until`; sends (times, failures) to `results`."""
    times, failures = [], []
    users = [
        threading.Thread(
            target=browse, args=(base, cookies[i % len(cookies)], urls, warm_at, until, args.think, times, failures)
        )
        for i in range(args.users)
    ]
    for user in users:
        user.start()
    for user in users:
        user.join()
    results.send((times, failures))


def browse(base, cookie, urls, warm_at, until, think, times, failures):
    """Pages until `until`; `times` gets (warm, ms) for each one answered, where warm says
    whether it was asked for after the warm-up, and `failures` why each other one failed."""
    session = requests.Session()
    session.cookies.set("sessionid", cookie, domain="127.0.0.1")
    while time.monotonic() < until:
        url = random.choice(urls)
        warm = time.monotonic() >= warm_at
        started = time.perf_counter()
        try:
            response = session.get(base + url, timeout=30)
            failure = None if response.status_code == 200 else f"HTTP {response.status_code}"
        except requests.RequestException as error:
            failure = type(error).__name__
        if failure:
            failures.append(failure)
        else:
            times.append((warm, 1000 * (time.perf_counter() - started)))
        if think:
            time.sleep(max(0.0, min(random.expovariate(1 / think), until - time.monotonic())))


async def watch(url, base, cookie, ready, stop, latencies, received):
    import websockets

    headers = {"Cookie": f"sessionid={cookie}"}
    async with websockets.connect(url, origin=base, additional_headers=headers, open_timeout=30) as ws:
        while True:
            event = json.loads(await ws.recv())
            if event.get("type") == "sync":
                break  # the opening events are read: from here on, live ones
        ready.release()
        while not stop.is_set():
            try:
                event = json.loads(await asyncio.wait_for(ws.recv(), timeout=0.5))
            except TimeoutError:
                continue
            if "drill_sent" in event:
                latencies.append((event["drill_warm"], 1000 * (time.time() - event["drill_sent"])))
                received.add(event["drill_n"])


async def foreign_origin_refused(url, cookie):
    import websockets

    try:
        async with websockets.connect(
            url, origin="http://elsewhere.example", additional_headers={"Cookie": f"sessionid={cookie}"}
        ):
            return False
    except websockets.exceptions.InvalidStatus:
        return True


def broadcaster(group, warm_at, until, sent):
    """A progress event every EVENT_INTERVAL until `until`, on a fixed schedule."""
    from jobs.events import broadcast

    due = time.monotonic()
    while due < until:
        n = len(sent)
        event = {"type": "progress", "epoch": 1, "step": n, "drill_n": n, "drill_warm": due >= warm_at}
        broadcast(group, {**event, "drill_sent": time.time()})
        sent.append(n)
        due += EVENT_INTERVAL
        time.sleep(max(0.0, due - time.monotonic()))


async def drill(base, port, cookies, experiment, urls, args):
    ws_url = f"ws://127.0.0.1:{port}/ws/experiments/{experiment.pk}/"
    refused = await foreign_origin_refused(ws_url, cookies[0])
    ready, stop = asyncio.Semaphore(0), asyncio.Event()
    latencies, received = [], [set() for _ in range(args.watchers)]
    watchers = [
        asyncio.create_task(watch(ws_url, base, cookies[i % len(cookies)], ready, stop, latencies, received[i]))
        for i in range(args.watchers)
    ]
    started = time.monotonic()
    for _ in range(args.watchers):
        await asyncio.wait_for(ready.acquire(), timeout=60)
    connect_seconds = time.monotonic() - started

    started_browsing = time.monotonic()
    warm_at = started_browsing + args.warmup
    until = warm_at + args.seconds
    sent = []
    # The users browse from a process of their own, as the watchers' browsers would be: in
    # this one, fifty threads parsing pages would hold the interpreter from the loop that
    # receives the events, and the drill would time its own queue.
    results, results_in = multiprocessing.get_context("fork").Pipe(duplex=False)
    users = multiprocessing.get_context("fork").Process(
        target=browsing, args=(base, cookies, urls, warm_at, until, args, results_in)
    )
    users.start()
    sender = threading.Thread(target=broadcaster, args=(experiment.group_name, warm_at, until, sent))
    sender.start()
    while sender.is_alive() or (users.is_alive() and not results.poll()):
        await asyncio.sleep(0.2)
    if not results.poll():
        sys.exit(f"the browsing users' process ended without its figures (exit code {users.exitcode})")
    times, failures = results.recv()
    users.join()
    elapsed = until - warm_at  # the measured window: every page counted was asked for in it
    # The events still in flight: a late one is slow, not lost; after 5 s it is lost.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and sum(map(len, received)) < len(sent) * args.watchers:
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*watchers)
    lost = sum(len(sent) - len(got) for got in received)
    return refused, connect_seconds, elapsed, times, failures, latencies, len(sent), lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 5 users, 20 watchers, 8 s")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30, help="measured, after the warm-up")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of load before the measuring starts")
    parser.add_argument("--think", type=float, default=0, help="mean seconds between a user's pages (0: none)")
    parser.add_argument("--processes", type=int, default=os.cpu_count(), help="web processes (WEB_PROCESSES)")
    args = parser.parse_args()
    if args.quick:
        args.users, args.watchers, args.seconds, args.warmup = 5, 20, 8, 2

    # The drill's events and the servers' sockets meet on a channel layer prefix of their own.
    os.environ["CHANNEL_LAYER_PREFIX"] = f"drill-{os.getpid()}"
    with throwaway_site() as vendor:
        from training.models import Experiment

        populate(500, 20)
        cookies = sessions(max(args.users, 1))
        experiment = Experiment.objects.filter(status="running").first()
        pages = list(Experiment.objects.values_list("pk", flat=True)[:50])
        urls = ["/", *(f"/experiments/{pk}/" for pk in pages)]
        port = free_port()
        server = start_server(port, args.processes)
        try:
            base = f"http://127.0.0.1:{port}"
            result = asyncio.run(drill(base, port, cookies, experiment, urls, args))
        finally:
            stop_server(server)

    refused, connect_seconds, elapsed, times, failures, latencies, sent, lost = result
    pace = f"{args.think:g} s apart on average" if args.think else "back to back"
    print(
        f"load drill on {vendor}, {args.processes} web processes (uvicorn), {os.cpu_count()} CPUs: "
        f"{args.users} users browsing ({pace}) for {args.warmup:g} s of warm-up and {elapsed:.0f} s measured, "
        f"{args.watchers} sockets on one experiment (connected in {connect_seconds:.1f} s)"
    )
    pages = [ms for warm, ms in times if warm]
    events = [ms for warm, ms in latencies if warm]
    print(
        f"load pages   {len(pages) / elapsed:6.1f} requests/s  p50 {statistics.median(pages):6.1f} ms  "
        f"p95 {percentile(pages, 95):6.1f} ms  failed {len(failures)}"
        + (f" ({', '.join(f'{n} {why}' for why, n in Counter(failures).most_common())})" if failures else "")
    )
    print(
        f"load events  {sent} sent to {args.watchers} sockets  p50 {statistics.median(events):6.1f} ms  "
        f"p99 {percentile(events, 99):6.1f} ms  lost {lost}"
    )
    cold_pages = [ms for warm, ms in times if not warm]
    cold_events = [ms for warm, ms in latencies if not warm]
    if cold_pages and cold_events:
        print(
            f"load warm-up pages p95 {percentile(cold_pages, 95):6.1f} ms  "
            f"events p99 {percentile(cold_events, 99):6.1f} ms  (the first {args.warmup:g} s, not in the lines above)"
        )
    print(f"load origin  a socket from another site's Origin {'refused' if refused else 'ACCEPTED'}")


def percentile(values, p):
    return statistics.quantiles(values, n=100)[p - 1] if len(values) > 1 else values[0]


if __name__ == "__main__":
    main()
