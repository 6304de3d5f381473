"""Live pages that lose nothing: the console's socket hears of new rows and their changes,
only for those who may see them; every group event is numbered, and a page that finds a
number missing gets what it missed from the database.

alice is an admin of team Vision and owns things; bob is a plain member of Vision; charlie
is in another team. Real Redis channel layer, real database, the ASGI application itself;
the browser tests below drive Chromium against the real web tier and worker.
"""

import asyncio
import concurrent.futures
import threading
import time

import pytest
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse

from accounts.models import Membership, Visibility
from config.asgi import application
from jobs.events import broadcast
from tests.browser import browser_page, platform_server, shot  # noqa: F401 - platform_server is a fixture
from tests.factories import make_dataset, make_experiment
from training.jobs import Run
from training.models import EpochMetric, Experiment, LogLine

pytestmark = pytest.mark.django_db(transaction=True)

ACCESS_DEADLINE = 5


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """A channel layer receives on one event loop at a time, and each test runs its own."""
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def logged_in(user):
    client = Client()
    client.force_login(user)
    return client


def session_cookie(user):
    # From a thread of its own: the tests call it inside their event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        client = pool.submit(logged_in, user).result()
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def socket(user, path):
    cookie = session_cookie(user)
    headers = [(b"host", b"localhost"), (b"origin", b"http://localhost"), (b"cookie", cookie)]
    return WebsocketCommunicator(application, path, headers=headers)


async def opened(communicator):
    connected, code = await communicator.connect()
    assert connected, code
    events = []
    while not await communicator.receive_nothing(timeout=0.3):
        events.append(await communicator.receive_json_from())
    return events


async def events_until(communicator, done, timeout=10):
    """Events received until done(events) holds."""
    events = []
    deadline = time.monotonic() + timeout
    while not done(events):
        left = deadline - time.monotonic()
        assert left > 0, f"gave up waiting; heard {events}"
        try:
            events.append(await communicator.receive_json_from(timeout=left))
        except TimeoutError:
            pytest.fail(f"gave up waiting; heard {events}")
    return events


def in_a_thread(work):
    """As a worker would send: from another thread, with an event loop of its own."""
    thread = threading.Thread(target=work)
    thread.start()
    return thread


async def joined(thread):
    while thread.is_alive():
        await asyncio.sleep(0.05)


def announce(obj):
    """What a job does when its row changes (jobs.models.Job.announce), from a worker's thread."""
    return in_a_thread(lambda: type(obj).objects.get(pk=obj.pk).announce())


# --- Sequence numbers ------------------------------------------------------------------------


def test_every_event_to_a_group_carries_the_next_number(alice):
    experiment = make_experiment(alice, status=Experiment.Status.RUNNING)

    async def watch():
        communicator = socket(alice, f"/ws/experiments/{experiment.pk}/")
        opening = await opened(communicator)
        sync = opening[-1]
        assert sync["type"] == "sync" and sync["group"] == experiment.group_name
        await joined(
            in_a_thread(lambda: [broadcast(experiment.group_name, {"type": "log", "message": m}) for m in "ab"])
        )
        events = await events_until(communicator, lambda e: len(e) == 2)
        assert [e["seq"] for e in events] == [sync["seq"] + 1, sync["seq"] + 2]
        await communicator.disconnect()

    asyncio.run(watch())


def lossy_layer(settings):
    """channels-redis' core layer (CHANNEL_LAYER=core) drops what is sent to a socket whose
    queue holds `capacity` messages already: a queue of one, and a socket busy with each
    message, lose most of a burst. (The default publish/subscribe layer loses what a socket
    misses while Redis is away; the page's side is the same.)"""
    layers = {"default": {**django_settings.CHANNEL_LAYERS["default"]}}
    layers["default"]["BACKEND"] = "channels_redis.core.RedisChannelLayer"
    layers["default"]["CONFIG"] = {**layers["default"]["CONFIG"], "capacity": 1}
    settings.CHANNEL_LAYERS = layers


BURST = 40


def train_a_burst(experiment, start=1):
    """What the job writes and sends for BURST epochs, as fast as it can, each row written
    before its event (training.jobs.Run.on_epoch) and a log line after it."""
    for epoch in range(start, start + BURST):
        row = EpochMetric.objects.create(experiment=experiment, epoch=epoch, train_loss=1 / epoch, learning_rate=0.1)
        broadcast(experiment.group_name, row.as_event())
        line = LogLine.objects.create(experiment=experiment, message=f"Epoch {epoch}")
        broadcast(experiment.group_name, line.as_event())


def test_a_gap_in_the_numbers_is_refilled_with_every_epoch_and_log_line(alice, settings):
    lossy_layer(settings)
    experiment = make_experiment(alice, status=Experiment.Status.RUNNING, epochs=BURST + 1)
    EpochMetric.objects.all().delete()

    async def watch():
        communicator = socket(alice, f"/ws/experiments/{experiment.pk}/")
        last_seq = (await opened(communicator))[-1]["seq"]
        epochs, lines, live, refills = set(), set(), 0, 0
        # The socket is busy (this event loop, its consumer's, blocked) while the burst is
        # sent: its queue fills at once, and channels-redis drops the rest.
        in_a_thread(lambda: train_a_burst(experiment)).join()
        # Nothing tells of a loss at the end of a stream but the next event: the job goes on
        # sending its progress twice a second.
        still_running = threading.Event()
        still_running.set()

        def progress():
            while still_running.is_set():
                Run(experiment).on_progress(BURST, 1, 10, 100.0)
                time.sleep(0.5)

        ticker = in_a_thread(progress)
        # The page's side (static/js/live.js): numbers in a row are handed on; a missing one
        # asks for everything after the last epoch and line it has, and drops the rest until
        # the refill's sync.
        refilling = False
        deadline = time.monotonic() + 20
        while len(epochs) < BURST or len(lines) < BURST:
            assert time.monotonic() < deadline, (sorted(epochs), len(lines))
            event = await communicator.receive_json_from(timeout=10)
            if event["type"] == "sync":
                last_seq, refilling = max(last_seq, event["seq"]), False
                continue
            if "seq" in event:
                if refilling or event["seq"] <= last_seq:
                    continue
                if event["seq"] != last_seq + 1:
                    refilling, refills = True, refills + 1
                    after_epoch = max(epochs, default=0)
                    await communicator.send_json_to({"after_epoch": after_epoch, "after_log": max(lines, default=0)})
                    continue
                last_seq = event["seq"]
                live += 1
            if event["type"] == "epoch":
                epochs.add(event["epoch"])
            elif event["type"] == "log":
                lines.add(event["id"])
        still_running.clear()
        await joined(ticker)
        await communicator.disconnect()
        return epochs, lines, live, refills

    epochs, lines, live, refills = asyncio.run(watch())
    # The loss was real: fewer events came through live than were sent.
    assert live < 2 * BURST and refills >= 1, (live, refills)
    assert epochs == set(range(1, BURST + 1))
    assert lines == set(LogLine.objects.filter(experiment=experiment).values_list("pk", flat=True))


# --- The console's socket: only what its viewer may see ------------------------------------------


def rows_heard(events):
    return [e for e in events if e["type"] == "row"]


def test_the_console_hears_of_a_row_by_its_owner_and_team_but_never_an_outsider(alice, bob, charlie, team):
    async def watch():
        sockets = {
            name: socket(user, "/ws/console/") for name, user in (("alice", alice), ("bob", bob), ("charlie", charlie))
        }
        for communicator in sockets.values():
            await opened(communicator)
        experiment = await asyncio.to_thread(
            lambda: make_experiment(alice, visibility=Visibility.TEAM, team=team, status=Experiment.Status.QUEUED)
        )
        await joined(announce(experiment))
        for name in ("alice", "bob"):
            heard = rows_heard(await events_until(sockets[name], rows_heard))
            assert heard[0]["id"] == experiment.pk and heard[0]["list"] == "active" and heard[0]["matches"]
            assert "alice lenet" in heard[0]["html"]
        assert await sockets["charlie"].receive_nothing(timeout=1) or not rows_heard(
            [await sockets["charlie"].receive_json_from()]
        )
        for communicator in sockets.values():
            await communicator.disconnect()

    asyncio.run(watch())


def test_an_outsider_hears_nothing_of_a_team_row_not_even_its_numbers_content(alice, charlie, team):
    experiment = make_experiment(alice, visibility=Visibility.TEAM, team=team, status=Experiment.Status.RUNNING)

    async def watch():
        communicator = socket(charlie, "/ws/console/")
        await opened(communicator)
        await joined(announce(experiment))
        events = []
        while not await communicator.receive_nothing(timeout=1):
            events.append(await communicator.receive_json_from())
        assert not [e for e in events if e["type"] in ("row", "row_removed")], events
        assert "alice lenet" not in str(events)
        await communicator.disconnect()

    asyncio.run(watch())


def test_a_row_narrowed_below_its_viewer_is_taken_off_the_console(alice, bob, team):
    experiment = make_experiment(alice, visibility=Visibility.TEAM, team=team, status=Experiment.Status.RUNNING)

    async def watch():
        communicator = socket(bob, "/ws/console/")
        await opened(communicator)
        await communicator.send_json_to({"shown": [f"experiment-{experiment.pk}"]})
        await asyncio.to_thread(
            lambda: Experiment.objects.filter(pk=experiment.pk).update(visibility=Visibility.PRIVATE)
        )
        events = await events_until(communicator, lambda e: any(x["type"] == "row_removed" for x in e), ACCESS_DEADLINE)
        assert events[-1] == {"type": "row_removed", "kind": "experiment", "id": experiment.pk}
        # Its next change is not sent to bob either.
        await joined(announce(experiment))
        later = []
        while not await communicator.receive_nothing(timeout=1):
            later.append(await communicator.receive_json_from())
        assert not rows_heard(later), later
        await communicator.disconnect()

    asyncio.run(watch())


def test_a_new_membership_joins_the_teams_group_while_the_console_is_open(alice, charlie, team):
    experiment = make_experiment(alice, visibility=Visibility.TEAM, team=team, status=Experiment.Status.RUNNING)

    async def watch():
        communicator = socket(charlie, "/ws/console/")
        await opened(communicator)
        await asyncio.to_thread(lambda: Membership.objects.create(user=charlie, team=team))
        events = await events_until(
            communicator,
            lambda e: any(x["type"] == "sync" and x["group"] == f"console-team-{team.pk}" for x in e),
            ACCESS_DEADLINE,
        )
        await joined(announce(experiment))
        heard = rows_heard(await events_until(communicator, rows_heard))
        assert heard[0]["id"] == experiment.pk, events
        await communicator.disconnect()

    asyncio.run(watch())


def test_the_console_says_whether_a_row_matches_its_filters(alice):
    dataset = make_dataset(alice)
    experiment = make_experiment(alice, dataset, name="cifar run", status=Experiment.Status.RUNNING)

    async def watch(query):
        communicator = socket(alice, f"/ws/console/?{query}")
        await opened(communicator)
        await joined(announce(experiment))
        heard = rows_heard(await events_until(communicator, rows_heard))
        await communicator.disconnect()
        return heard[0]["matches"]

    assert asyncio.run(watch("q=cifar")) is True
    assert asyncio.run(watch("q=mnist")) is False
    assert asyncio.run(watch("status=done")) is False


def test_a_signed_out_console_closes(alice):
    client = logged_in(alice)

    async def watch():
        cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
        headers = [(b"host", b"localhost"), (b"origin", b"http://localhost"), (b"cookie", cookie)]
        communicator = WebsocketCommunicator(application, "/ws/console/", headers=headers)
        await opened(communicator)
        await asyncio.to_thread(lambda: client.post(reverse("logout")))
        message = await communicator.receive_output(timeout=ACCESS_DEADLINE)
        assert message == {"type": "websocket.close", "code": 4403}, message

    asyncio.run(watch())


def test_an_anonymous_console_socket_is_refused(db):
    async def watch():
        communicator = WebsocketCommunicator(
            application, "/ws/console/", headers=[(b"host", b"localhost"), (b"origin", b"http://localhost")]
        )
        connected, _ = await communicator.connect()
        assert not connected

    asyncio.run(watch())


def test_a_sweep_socket_tags_each_members_events_and_skips_a_hidden_member(alice, charlie, team):
    from training.models import Sweep

    sweep = Sweep.objects.create(owner=alice, name="rates", visibility=Visibility.ORGANISATION)
    shared = make_experiment(alice, visibility=Visibility.ORGANISATION, sweep=sweep, status=Experiment.Status.RUNNING)
    private = make_experiment(alice, shared.dataset, sweep=sweep, status=Experiment.Status.RUNNING)

    async def watch():
        communicator = socket(charlie, f"/ws/sweeps/{sweep.pk}/")
        await opened(communicator)

        def send():
            for experiment in (private, shared):
                broadcast(experiment.group_name, {"type": "epoch", "epoch": 2, "train_loss": 0.5})

        await joined(in_a_thread(send))
        heard = await events_until(communicator, lambda e: len(e) >= 1)
        assert [(e["experiment"], e["epoch"]) for e in heard] == [(shared.pk, 2)]
        assert await communicator.receive_nothing(timeout=0.5)
        await communicator.disconnect()

    asyncio.run(watch())
