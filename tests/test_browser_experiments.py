"""Customize a network in the editor, visualize it, train it, abort and resume — in a
real Chromium against the real web tier and a real worker."""

import re

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import User
from datasets.models import Dataset
from tests.browser import browser_page, log_in, platform_server, set_editor, shot  # noqa: F401 - platform_server is a fixture
from training.models import EpochMetric, Experiment

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EPOCHS = 500


def test_customize_visualize_train_abort_resume(platform_server, mnist_root, monkeypatch):  # noqa: F811
    User.objects.create_user("fay", password="fay-password-1")
    client = Client()
    client.login(username="fay", password="fay-password-1")
    client.post(
        reverse("dataset-new"),
        {"name": "digits", "source_type": "folder", "source_folder": str(mnist_root / "train"), "channels": 1,
         "width": 28, "height": 28, "resize_mode": "squash", "val_percent": 20, "visibility": "private",
         "encoding": "raw", "shuffle": "on"},
    )  # fmt: skip
    from playwright.sync_api import expect

    with browser_page(monkeypatch) as page:
        log_in(page, platform_server, "fay", "fay-password-1")
        page.click("#datasets a:has-text('digits')")
        expect(page.locator("#status")).to_have_text("Ready", timeout=120_000)

        # Customize: LeNet's spec lands in the editor and Visualize describes it.
        page.goto(platform_server + "/experiments/new/")
        page.fill("#id_name", "narrow lenet")
        page.select_option("#customize-from", "network:lenet")
        expect(page.locator("#id_network_spec")).to_have_value(re.compile("type: conv"))
        expect(page.locator("#id_network")).to_have_value("custom")
        expect(page.locator("#total-params")).to_have_text("431.1 k")
        spec = page.input_value("#id_network_spec").replace("features: 20", "features: 8", 1)
        set_editor(page, spec)
        page.click("#visualize")
        expect(page.locator("#total-params")).not_to_have_text("431.1 k")
        # A mistake is pinned to its layer before anything runs.
        set_editor(page, spec.replace("type: flatten", "type: relu"))
        page.click("#visualize")
        expect(page.locator("#visualize-error")).to_contain_text("flat")
        expect(page.locator("#network-table tr.failed-layer")).to_have_count(1)
        set_editor(page, spec)
        shot(page, "experiment-form")

        page.fill("#id_epochs", str(EPOCHS))
        page.locator("#id_epochs").blur()
        # The recipe for the new length is in before the fields it fills are changed by hand.
        expect(page.locator("#recipe-summary")).to_contain_text(f", {EPOCHS} epochs")
        page.fill("#id_batch_sizes", "32")
        page.select_option("#id_solver", "adam")
        page.fill("#id_learning_rates", "0.001")
        page.select_option("#id_lr_policy", "fixed")
        page.click("button:has-text('Create')")

        # Train, then abort part-way: the status changes and a snapshot is kept.
        page.wait_for_function("Number(document.body.dataset.epochs) >= 2", timeout=240_000)
        page.click("#abort-form button")
        expect(page.locator("#status")).to_have_text("Aborted", timeout=60_000)
        expect(page.locator("#resume-form")).to_be_visible()
        aborted_at = EpochMetric.objects.filter(train_loss__isnull=False).count()
        assert 2 <= aborted_at < EPOCHS

        # Resume: the curve goes on from where it stopped, with no epoch twice.
        page.click("#resume-form button")
        expect(page.locator("#status")).to_have_text("Running", timeout=60_000)
        page.wait_for_function(f"Number(document.body.dataset.epochs) >= {aborted_at + 3}", timeout=240_000)
        page.click("#abort-form button")
        expect(page.locator("#status")).to_have_text("Aborted", timeout=60_000)
        # Aborting reloads the page: its status shows before its scripts have run.
        page.wait_for_function("window.Chart && Chart.getChart('metrics-chart')")
        points = page.evaluate("Chart.getChart('metrics-chart').data.datasets[1].data.map(p => p.x)")
        assert points == list(range(1, len(points) + 1)) and len(points) > aborted_at + 2
        steps = page.evaluate("Chart.getChart('metrics-chart').data.datasets[0].data.map(p => p.x)")
        assert steps == sorted(set(steps)) and steps[-1] > aborted_at + 2
        expect(page.locator("#status-history")).to_contain_text("resume")
        shot(page, "experiment-resumed")

        # The custom network classifies with its own spec, from the snapshot abort kept.
        expect(page.locator("#resume-form")).to_be_visible()
        page.set_input_files("#id_image", str(next((mnist_root / "test" / "4").glob("*.png"))))
        page.click("button:has-text('Classify')")
        expect(page.locator("#predictions tbody tr")).to_have_count(5)

    experiment = Experiment.objects.get()
    assert experiment.network == "custom" and "features: 8" in experiment.network_spec
    epochs = list(experiment.metrics.filter(train_loss__isnull=False).values_list("epoch", flat=True))
    assert epochs == list(range(1, len(epochs) + 1))
    assert experiment.status == Experiment.Status.ABORTED and experiment.attempts == 2
    assert Dataset.objects.get().status == Dataset.Status.DONE
