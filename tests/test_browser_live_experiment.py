"""The experiment page follows a running experiment without reloading: its status
history, its snapshot table as retention removes rows, its buttons and its charts at
iteration resolution — in a real Chromium against the real web tier and a real worker."""

import threading

import numpy as np
import pytest
from django.test import Client
from django.urls import reverse
from PIL import Image
from sklearn.datasets import load_digits

from accounts.models import User
from tests.browser import browser_page, log_in, platform_server, shot  # noqa: F401 - platform_server is a fixture
from tests.factories import make_dataset
from training.forms import data_with_defaults
from training.models import Experiment

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EPOCHS = 400
NOTICES = "main > .flash:not(#live-status)"


def digits_dataset(owner):
    """A stored dataset of real handwritten digits, written as a build leaves it."""
    digits = load_digits()
    images = np.stack(
        [np.asarray(Image.fromarray((d * 15).astype(np.uint8)).resize((28, 28), Image.BILINEAR)) for d in digits.images]
    )[..., None]
    labels = digits.target.astype(np.int32)
    dataset = make_dataset(
        owner, classes=[str(d) for d in range(10)], counts={"train": [80] * 10, "val": [20] * 10}, width=28, height=28
    )
    folder = dataset.directory
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (("train_images", images[:800]), ("train_labels", labels[:800]),
                        ("val_images", images[800:1000]), ("val_labels", labels[800:1000]),
                        ("mean", images[:800].mean(axis=0, dtype=np.float32))):  # fmt: skip
        np.save(folder / f"{name}.npy", array)
    return dataset


def abort(experiment):
    """Abort as another tab or the API would. In a thread of its own: Playwright's event
    loop in this one would refuse the live event the abort sends."""
    thread = threading.Thread(target=lambda: Experiment.objects.get(pk=experiment.pk).request_abort())
    thread.start()
    thread.join()


def rows(page, table):
    return page.locator(f"#{table} tbody tr")


def test_the_page_follows_status_and_snapshots_without_reloading(platform_server, monkeypatch):  # noqa: F811
    user = User.objects.create_user("gus", password="gus-password-1")
    dataset = digits_dataset(user)
    client = Client()
    client.force_login(user)
    form = data_with_defaults({"name": "live digits", "dataset": dataset.pk, "epochs": EPOCHS, "batch_size": 16,
                               "val_interval": 0.5, "snapshot_interval": 1, "keep_snapshots": 1})  # fmt: skip
    response = client.post(reverse("experiment-new"), form)
    assert response.status_code == 302, response.content.decode()[:2000]
    experiment = Experiment.objects.get()
    try:
        watch(platform_server, experiment, monkeypatch)
    finally:
        # The worker stops only after its job: a failed check must not leave it training.
        Experiment.objects.get().request_abort()


def watch(platform_server, experiment, monkeypatch):  # noqa: F811
    from playwright.sync_api import expect

    with browser_page(monkeypatch) as page:
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        log_in(page, platform_server, "gus", "gus-password-1")
        page.goto(platform_server + experiment.get_absolute_url())
        # Anything this page does from here on must happen without a reload: a reload drops the mark.
        page.evaluate("window.sameDocument = true")
        expect(page.locator("#status")).to_have_text("Running", timeout=120_000)
        page.wait_for_function("Number(document.body.dataset.epochs) >= 3", timeout=120_000)

        # Retention keeps the newest and the best: rows come and go as the epochs pass.
        expect(rows(page, "snapshots")).not_to_have_count(0)
        first = rows(page, "snapshots").first.get_attribute("data-snapshot-row")
        page.wait_for_function(
            f"!document.querySelector('#snapshots tr[data-snapshot-row=\"{first}\"]')", timeout=60_000
        )
        assert 1 <= rows(page, "snapshots").count() <= 2
        # The progress line counts epochs from 1, and never past the last.
        epoch = int(page.locator("#progress-text").inner_text().split()[1])
        assert 1 <= epoch <= EPOCHS
        # The training loss is drawn per batch (50 steps an epoch: a point each), validations twice an epoch.
        train_points, val_points = page.evaluate(
            "Chart.getChart('metrics-chart').data.datasets.slice(0, 2).map((d) => d.data.length)"
        )
        assert train_points > 2 * 50 and val_points >= 4
        shot(page, "experiment-training")

        # Aborted from elsewhere (another tab, the API): the page follows on its own.
        history = rows(page, "status-history").count()
        abort(experiment)
        expect(page.locator("#status")).to_have_text("Aborted", timeout=60_000)
        expect(rows(page, "status-history")).to_have_count(history + 1)
        expect(rows(page, "status-history").last).to_contain_text("Aborted")
        expect(page.locator("#resume-form")).to_be_visible()
        expect(page.locator("#abort-form")).to_be_hidden()
        expect(page.locator("#epoch-progress")).to_be_hidden()
        aborted = experiment.snapshots.order_by("-epoch").first()
        expect(page.locator(f'#snapshots tr[data-snapshot-row="{aborted.pk}"]')).to_have_count(1)
        assert page.evaluate("window.sameDocument") is True
        shot(page, "experiment-aborted")

        # Drag across the chart to zoom in on x; the range comes back at full resolution.
        box = page.locator("#metrics-chart").bounding_box()
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] * 0.3, y)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, y, steps=5)
        page.mouse.up()
        expect(page.locator("#zoom-reset")).to_be_enabled()
        low, high = page.evaluate("['min', 'max'].map((end) => Chart.getChart('metrics-chart').scales.x[end])")
        assert 0 < low < high < experiment.snapshots.order_by("-epoch").first().epoch
        page.click("#zoom-reset")
        expect(page.locator("#zoom-reset")).to_be_disabled()
        page.select_option("#chart-x", "time")
        page.check("#loss-log")
        assert page.evaluate("Chart.getChart('metrics-chart').options.scales.x.title.text") == "wall clock"
        assert page.evaluate("Chart.getChart('metrics-chart').scales.loss.type") == "logarithmic"
        shot(page, "experiment-wall-clock-log")

        # Resume (a form post, so a new page from here): its notice goes once the run moves on.
        page.click("#resume-form button")
        expect(page.locator(NOTICES)).to_contain_text("Queued to resume")
        page.evaluate("window.sameDocument = true")
        expect(page.locator("#status")).to_have_text("Running", timeout=60_000)
        expect(page.locator("#resume-form")).to_be_hidden()
        expect(page.locator("#abort-form")).to_be_visible()
        history = rows(page, "status-history").count()
        abort(experiment)
        expect(page.locator("#status")).to_have_text("Aborted", timeout=60_000)
        expect(rows(page, "status-history")).to_have_count(history + 1)
        expect(page.locator(NOTICES)).to_have_count(0)
        expect(page.locator("#resume-form")).to_be_visible()
        assert page.evaluate("window.sameDocument") is True
        assert errors == []
