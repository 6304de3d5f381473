"""A new user's whole path through the pages, in a real Chromium (Debian's), against a
real daphne and real RQ workers."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from accounts.models import User
from tests.conftest import ROOT, subprocess_env

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = ROOT / "var" / "screenshots"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def platform_server():
    """daphne serving config.asgi, and one worker per queue, as `make run` starts them."""
    port = free_port()
    env = subprocess_env()
    log_dir = Path(os.environ["PLATFORM_TEST_DIR"])
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
            cwd=ROOT, env=env, stdout=open(log_dir / "daphne.log", "w"), stderr=subprocess.STDOUT,
        ),
        subprocess.Popen(
            [sys.executable, "manage.py", "rqworker", "datasets", "training"],
            cwd=ROOT, env=env, stdout=open(log_dir / "worker.log", "w"), stderr=subprocess.STDOUT,
        ),
    ]  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        pytest.fail(f"daphne did not start; see {log_dir / 'daphne.log'}")
    yield f"http://localhost:{port}"
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=20)


def shot(page, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def test_a_new_user_builds_trains_watches_and_classifies(platform_server, mnist_root, monkeypatch):
    User.objects.create_user("dana", password="dana-password-1")
    # Playwright's sync API runs an event loop in this thread; the test itself does no
    # database work while it runs, everything goes through the pages.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(30_000)

        # Log in: every page sends a stranger to the login portal first.
        page.goto(platform_server + "/")
        expect(page).to_have_url(f"{platform_server}/accounts/login/?next=/")
        page.fill("#id_username", "dana")
        page.fill("#id_password", "dana-password-1")
        page.click("button[type=submit]")
        expect(page.locator("h2", has_text="Datasets")).to_be_visible()

        # A dataset from the sample folder.
        page.click("text=New dataset")
        page.fill("#id_name", "MNIST slice")
        page.fill("#id_source_folder", str(mnist_root / "train"))
        page.fill("#id_val_percent", "20")
        page.click("button:has-text('Create')")
        expect(page.locator("#status")).to_have_text("Ready", timeout=120_000)
        expect(page.locator("#classes tbody tr")).to_have_count(10)
        shot(page, "dataset")

        # Train two epochs and watch the points arrive without a reload.
        page.click("text=Train a network on it")
        page.fill("#id_epochs", "2")
        page.fill("#id_batch_sizes", "32")
        page.select_option("#id_solver", "adam")
        page.fill("#id_learning_rates", "0.001")
        page.select_option("#id_lr_policy", "fixed")
        page.click("button:has-text('Create')")
        page.evaluate("window.sameDocument = true")
        expect(page.locator("body")).to_have_attribute("data-epochs", "1", timeout=240_000)
        expect(page.locator("body")).to_have_attribute("data-epochs", "2", timeout=120_000)
        assert page.evaluate("window.sameDocument") is True
        points = page.evaluate("Chart.getChart('metrics-chart').data.datasets[0].data.length")
        assert points == 2
        expect(page.locator("#status")).to_have_text("Done", timeout=60_000)

        # Classify one image with the newest snapshot: top 5.
        digit = next((mnist_root / "test" / "3").glob("*.png"))
        expect(page.locator("#classify")).to_be_visible()
        page.set_input_files("#id_image", str(digit))
        page.click("button:has-text('Classify')")
        expect(page.locator("#predictions tbody tr")).to_have_count(5)
        shot(page, "experiment")
        browser.close()
