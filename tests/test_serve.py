"""The web tier's ASGI wrappers (config.serve): pages take turns, so the event loop that
forwards the sockets' events keeps its share of the interpreter; an upload arriving or a
download streaming holds no turn; an error gives its turn back.

Each test drives the wrapper in a real event loop with a small ASGI application of its
own, which records how many of its requests are between their body and their response;
the last one starts scripts/web.sh as `make run` does."""

import asyncio
import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from websockets.sync.client import connect

from accounts.models import AuditEntry, FailedLogin
from config.serve import no_sends_after_close, pages_in_turn
from jobs.events import broadcast
from tests.browser import serving
from tests.factories import make_experiment
from training.models import Experiment


class View:
    """An ASGI app that reads the body, works for `seconds`, then answers; it counts how
    many requests work at once."""

    def __init__(self, seconds=0.05, fail=False):
        self.seconds, self.fail = seconds, fail
        self.working = self.most = 0

    async def __call__(self, scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        self.working += 1
        self.most = max(self.most, self.working)
        try:
            await asyncio.sleep(self.seconds)
            if self.fail:
                raise RuntimeError("the view failed")
        finally:
            self.working -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def request(app, body=None):
    """One HTTP request; `body` an asyncio.Queue of (chunk, more_body) as the client sends
    them (default: one empty chunk). The messages sent back."""
    if body is None:
        body = asyncio.Queue()
        body.put_nowait((b"", False))
    sent = []

    async def receive():
        chunk, more = await body.get()
        return {"type": "http.request", "body": chunk, "more_body": more}

    async def send(message):
        sent.append(message)

    await app({"type": "http", "method": "POST", "path": "/"}, receive, send)
    return sent


def test_at_most_the_turns_work_at_once_and_every_page_is_answered():
    async def main(turns):
        view = View()
        app = pages_in_turn(view, turns, longest=10)
        answers = await asyncio.gather(*(request(app) for _ in range(6)))
        return view.most, answers

    most, answers = asyncio.run(main(2))
    assert most == 2
    assert all(answer[0]["status"] == 200 for answer in answers)
    # Without the limit every one of them works at once: what the turns prevent.
    assert asyncio.run(main(0))[0] == 6


def test_an_upload_still_arriving_holds_no_turn():
    async def main():
        view = View(seconds=0)
        app = pages_in_turn(view, 1, longest=10)
        upload = asyncio.Queue()
        upload.put_nowait((b"first part", True))
        slow = asyncio.ensure_future(request(app, upload))
        await asyncio.sleep(0.05)
        quick = await asyncio.wait_for(request(app), timeout=2)  # answered while the upload is half-way
        assert not slow.done()
        upload.put_nowait((b"last part", False))
        return quick, await asyncio.wait_for(slow, timeout=2)

    quick, slow = asyncio.run(main())
    assert quick[0]["status"] == slow[0]["status"] == 200


def test_a_streaming_response_gives_its_turn_back_when_it_starts():
    async def main():
        streaming, other = asyncio.Event(), View(seconds=0)

        async def download(scope, receive, send):
            await receive()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await streaming.wait()  # still streaming: its turn must be free by now
            await send({"type": "http.response.body", "body": b"the end"})

        async def route(scope, receive, send):
            return await (download if scope["path"] == "/download" else other)(scope, receive, send)

        app = pages_in_turn(route, 1, longest=10)

        async def get(path):
            sent = []

            async def receive():
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message):
                sent.append(message)

            await app({"type": "http", "method": "GET", "path": path}, receive, send)
            return sent

        stream = asyncio.ensure_future(get("/download"))
        await asyncio.sleep(0.05)
        page = await asyncio.wait_for(get("/page"), timeout=2)
        streaming.set()
        return page, await stream

    page, stream = asyncio.run(main())
    assert page[0]["status"] == 200
    assert stream[-1]["body"] == b"the end"


def test_a_failing_view_gives_its_turn_back():
    async def main():
        failing, working = View(fail=True), View(seconds=0)

        async def route(scope, receive, send):
            return await (failing if scope.get("fail") else working)(scope, receive, send)

        app = pages_in_turn(route, 1, longest=10)

        async def failed():
            with pytest.raises(RuntimeError):
                await app(
                    {"type": "http", "path": "/", "fail": True},
                    lambda: asyncio.sleep(0, {"type": "http.request", "body": b""}),
                    lambda message: asyncio.sleep(0),
                )

        await failed()
        return await asyncio.wait_for(request(app), timeout=2)

    assert asyncio.run(main())[0]["status"] == 200


def test_a_page_working_past_the_longest_turn_gives_it_up():
    async def main(longest):
        slow, quick = View(seconds=1.0), View(seconds=0)

        async def route(scope, receive, send):
            return await (slow if scope.get("slow") else quick)(scope, receive, send)

        app = pages_in_turn(route, 1, longest=longest)

        async def slow_page():
            async def receive():
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message):
                pass

            await app({"type": "http", "path": "/", "slow": True}, receive, send)

        waiting = asyncio.ensure_future(slow_page())
        await asyncio.sleep(0.02)
        started = time.monotonic()
        await request(app)
        waited = time.monotonic() - started
        await waiting
        return waited

    # The quick page waits out the slow one's turn (0.1 s), not the slow page (1 s)...
    assert asyncio.run(main(0.1)) < 0.6
    # ...which, with a turn long enough, it does.
    assert asyncio.run(main(5)) > 0.9


def test_sockets_take_no_turns_and_nothing_is_sent_after_they_close():
    async def main():
        sent, page_may_answer = [], asyncio.Event()

        async def page(scope, receive, send):
            await receive()
            await page_may_answer.wait()  # holds the only turn until the socket is done
            await send({"type": "http.response.start", "status": 200, "headers": []})

        async def consumer(scope, receive, send):
            await send({"type": "websocket.accept"})
            assert (await receive())["type"] == "websocket.disconnect"
            await send({"type": "websocket.send", "text": "an event after the tab closed"})

        async def route(scope, receive, send):
            return await (consumer if scope["type"] == "websocket" else page)(scope, receive, send)

        async def receive():
            return {"type": "websocket.disconnect", "code": 1001}

        async def send(message):
            sent.append(message["type"])

        app = no_sends_after_close(pages_in_turn(route, 1, longest=10))
        waiting_page = asyncio.ensure_future(request(app))
        await asyncio.sleep(0.05)
        await asyncio.wait_for(app({"type": "websocket", "path": "/ws/"}, receive, send), timeout=2)
        page_may_answer.set()
        await waiting_page
        return sent

    assert asyncio.run(main()) == ["websocket.accept"]


# --- the web tier as make run starts it ---------------------------------------------------------


@contextlib.contextmanager
def running_web_tier(tmp_path, processes=2, **env):
    """scripts/web.sh against the test database, two processes with one page turn each
    unless told otherwise; yields (base URL, log path)."""
    log = tmp_path / "web.log"
    with serving(log, processes, name="127.0.0.1", **{"WEB_PAGE_THREADS": "1", **env}) as base:
        yield base, log


@pytest.fixture
def web_tier(tmp_path):
    with running_web_tier(tmp_path) as served:
        yield served


@pytest.mark.django_db(transaction=True)
def test_the_web_tier_serves_pages_at_once_and_forwards_events_meanwhile(client, alice, web_tier):
    base, log = web_tier
    experiment = make_experiment(alice, status=Experiment.Status.RUNNING)
    client.force_login(alice)
    cookie = client.cookies["sessionid"].value
    session = requests.Session()
    session.cookies.set("sessionid", cookie, domain="127.0.0.1")
    ws_url = base.replace("http", "ws") + f"/ws/experiments/{experiment.pk}/"
    with connect(ws_url, origin=base, additional_headers={"Cookie": f"sessionid={cookie}"}) as ws:
        while json.loads(ws.recv(timeout=10))["type"] != "sync":
            pass
        with ThreadPoolExecutor(8) as pool:
            pages = pool.map(
                lambda path: session.get(base + path, timeout=30), ["/", f"/experiments/{experiment.pk}/"] * 8
            )
            broadcast(experiment.group_name, {"type": "progress", "epoch": 1, "step": 7, "steps": 10})
            event = json.loads(ws.recv(timeout=10))
            assert [page.status_code for page in pages] == [200] * 16
    assert (event["type"], event["step"]) == ("progress", 7)
    assert experiment.name in session.get(base + f"/experiments/{experiment.pk}/", timeout=30).text
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize(("trusted", "recorded"), [("127.0.0.1", "203.0.113.7"), ("192.0.2.1", "127.0.0.1")])
@pytest.mark.django_db(transaction=True)
def test_a_trusted_proxy_names_the_client_for_the_audit_log_and_the_login_limit(alice, tmp_path, trusted, recorded):
    # The test's requests come from 127.0.0.1, standing in for a proxy; believed only when
    # FORWARDED_ALLOW_IPS lists it.
    with running_web_tier(tmp_path, processes=1, FORWARDED_ALLOW_IPS=trusted) as (base, log):
        session = requests.Session()
        session.get(base + "/accounts/login/", timeout=30)
        form = {"username": "alice", "password": "not-alices", "csrfmiddlewaretoken": session.cookies["csrftoken"]}
        refused = session.post(
            base + "/accounts/login/",
            data=form,
            headers={"X-Forwarded-For": "203.0.113.7", "Referer": base},
            timeout=30,
        )
    assert refused.status_code == 200 and "Please enter a correct username and password" in refused.text
    assert FailedLogin.objects.get(username="alice").address == recorded
    assert AuditEntry.objects.get(action=AuditEntry.Action.LOGIN_FAILED).address == recorded
