"""A new user's whole path through the pages, in a real Chromium (Debian's), against a
the real web tier and real RQ workers."""

import json

import pytest

from accounts.models import User
from tests.browser import browser_page, platform_server, shot  # noqa: F401 - platform_server is a fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_new_user_builds_trains_watches_and_classifies(platform_server, mnist_root, monkeypatch):  # noqa: F811
    User.objects.create_user("dana", password="dana-password-1")
    from playwright.sync_api import expect

    with browser_page(monkeypatch) as page:
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
        page.locator("#id_epochs").blur()
        # The recipe for the new length is in before the fields it fills are changed by hand.
        expect(page.locator("#recipe-summary")).to_contain_text(", 2 epochs")
        page.fill("#id_batch_sizes", "32")
        page.select_option("#id_solver", "adam")
        page.fill("#id_learning_rates", "0.001")
        page.select_option("#id_lr_policy", "fixed")
        frames = []
        page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: frames.append(json.loads(frame))))
        page.click("button:has-text('Create')")
        page.evaluate("window.sameDocument = true")
        page.wait_for_function("Number(document.body.dataset.epochs) >= 2", timeout=240_000)
        assert page.evaluate("window.sameDocument") is True
        # The points came over the WebSocket as the epochs finished, not with a reload.
        assert [f["epoch"] for f in frames if f["type"] == "epoch"][:2] == [1, 2]
        # One validation point an epoch (the training loss has one per step besides).
        points = page.evaluate("Chart.getChart('metrics-chart').data.datasets[1].data.length")
        assert points == 2
        expect(page.locator("#status")).to_have_text("Done", timeout=60_000)

        # Classify one image with the newest snapshot: top 5.
        digit = next((mnist_root / "test" / "3").glob("*.png"))
        expect(page.locator("#classify")).to_be_visible()
        page.set_input_files("#id_image", str(digit))
        page.click("button:has-text('Classify')")
        expect(page.locator("#predictions tbody tr")).to_have_count(5)
        shot(page, "experiment")
