"""What the browser tests share: the real web tier (scripts/web.sh, as `make run` starts it)
and a worker serving the test database, and Debian's Chromium driven by Playwright (its own
browser download does not work offline)."""

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, subprocess_env

# Without the networking flags Chromium keeps calling home, and this machine refuses it.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]  # fmt: skip
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = ROOT / "var" / "screenshots"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def web_tier(port, log, processes=1, **env):
    """scripts/web.sh (uvicorn serving config.serve, as `make run` starts it) against the test
    database on 127.0.0.1:`port`, `processes` processes, its output to the file `log`; `env`
    adds to its environment. The process, started."""
    env = subprocess_env(HOST="127.0.0.1", PORT=str(port), WEB_PROCESSES=str(processes), **env)
    return subprocess.Popen(
        ["bash", "scripts/web.sh"], cwd=ROOT, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT
    )


@contextlib.contextmanager
def serving(log, processes=1, name="localhost", **env):
    """web_tier() on a free port while the block runs; yields its base URL, with the host
    called `name`."""
    port = free_port()
    process = web_tier(port, log, processes, **env)
    try:
        wait_for_port(port, process, lambda: f"the web tier did not start:\n{Path(log).read_text()}", seconds=60)
        yield f"http://{name}:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def platform_server():
    """The web tier and one worker per queue, as `make run` starts them."""
    log_dir = Path(os.environ["PLATFORM_TEST_DIR"])
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "rqworker", "datasets", "training"],
        cwd=ROOT, env=subprocess_env(), stdout=open(log_dir / "worker.log", "w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        with serving(log_dir / "web.log") as base:
            yield base
    finally:
        worker.terminate()
        worker.wait(timeout=20)
        # Shown by pytest only when the test failed: what the worker and the web tier did.
        for name in ("worker.log", "web.log"):
            lines = (log_dir / name).read_text(errors="replace").splitlines()
            print(f"--- the last lines of {name} ---", *lines[-60:], sep="\n")


def wait_for_port(port, process, failure, seconds=30):
    """Until a server subprocess answers on `port`; fails the test with `failure` (the
    process killed) if it exits or does not answer within `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail(failure() if callable(failure) else failure)
            time.sleep(0.2)


def set_editor(page, text):
    """Replace the text of the page's network editor (CodeMirror 5 keeps its instance on its
    wrapper element); the editor writes it back to its form field."""
    page.evaluate("text => document.querySelector('.CodeMirror').CodeMirror.setValue(text)", text)


def log_in(page, server, username, password):
    """The login page's form, filled in and sent."""
    page.goto(server + "/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")


def held_back(page, pattern):
    """Holds back the page's first request matching `pattern` (Playwright's URL glob) and
    lets later ones through: returns the list that gets the held route, once the page has
    sent it (continue it with `.continue_()`)."""
    held = []
    page.route(pattern, lambda route: route.continue_() if held else held.append(route))
    return held


def wait_until_held(page, held, what):
    for _ in range(200):  # Playwright hands the route over while the page is waited on
        if held:
            return held[0]
        page.wait_for_timeout(50)
    pytest.fail(f"the page did not ask for {what}")


def shot(page, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


@contextlib.contextmanager
def browser_page(monkeypatch):
    """A fresh Chromium page. Playwright's sync API runs an event loop in this thread, so
    Django's guard against database calls from async code is lifted for the test: the test
    itself queries the database only between page actions."""
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            browser.close()
