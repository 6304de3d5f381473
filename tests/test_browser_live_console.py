"""The console and the sweep page follow the jobs without reloading, in a real Chromium
against the real web tier: a new experiment made by another request appears, its progress
and status change, and it moves to "Finished"; a sweep's rows fill in as its members
train and finish. The job's side is the code a worker runs (Job.claim, training.jobs.Run,
Job.finish), called from the test, so no training is needed to drive it."""

import os
import threading
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import User, Visibility
from tests.browser import browser_page, log_in, serving, shot
from tests.factories import make_dataset, make_experiment
from training.forms import data_with_defaults
from training.jobs import Run
from training.models import EpochMetric, Experiment, Sweep

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def web_server():
    """The web tier alone: no worker takes the jobs, the test plays the worker."""
    with serving(Path(os.environ["PLATFORM_TEST_DIR"]) / "web-console.log") as base:
        yield base


def as_a_worker(work):
    """In a thread of its own: Playwright's event loop in this one would refuse the events."""
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def test_the_console_shows_a_new_experiment_its_progress_and_its_end(web_server, monkeypatch):
    from playwright.sync_api import expect

    user = User.objects.create_user("gus", password="gus-password-1")
    dataset = make_dataset(user, name="digits", width=28, height=28)
    with browser_page(monkeypatch) as page:
        log_in(page, web_server, "gus", "gus-password-1")
        page.goto(web_server + "/")
        expect(page.locator("body[data-console-live=connected]")).to_have_count(1)
        expect(page.locator("#active-experiments tr.empty")).to_have_count(1)

        # Another tab (here another client) creates an experiment.
        client = Client()
        client.force_login(user)
        form = data_with_defaults({"name": "live console run", "dataset": dataset.pk, "epochs": 3})
        as_a_worker(lambda: client.post(reverse("experiment-new"), form))
        experiment = Experiment.objects.get(name="live console run")
        row = page.locator(f'#active-experiments tr[data-row="experiment-{experiment.pk}"]')
        expect(row).to_contain_text("live console run")
        expect(row.locator(".status")).to_have_text("Queued")

        def start_and_progress():
            running = Experiment.objects.get(pk=experiment.pk)
            running.claim(running.job_id)
            Run(running).on_progress(0, 30, 100, 250.0)

        as_a_worker(start_and_progress)
        expect(row.locator(".status")).to_have_text("Running")
        expect(row.locator("progress")).to_have_attribute("value", "30")

        def an_epoch_and_the_end():
            running = Experiment.objects.get(pk=experiment.pk)
            Run(running).on_epoch({"epoch": 1, "train_loss": 0.9, "val_loss": 0.8, "val_accuracy": 0.75,
                                   "learning_rate": 0.01, "images_per_second": 250.0, "seconds": 1.0})  # fmt: skip
            running.finish(Experiment.Status.DONE)

        as_a_worker(an_epoch_and_the_end)
        finished = page.locator(f'#finished-experiments tr[data-row="experiment-{experiment.pk}"]')
        expect(finished.locator(".status")).to_have_text("Done")
        expect(finished).to_contain_text("75%")
        expect(row).to_have_count(0)
        expect(page.locator("#active-experiments tr.empty")).to_have_count(0)  # the list is empty, rendered live
        shot(page, "console-live")
        assert page.evaluate("document.body.dataset.refills") is None  # nothing was lost on the way


def test_a_new_row_on_another_page_is_counted_not_inserted(web_server, monkeypatch):
    from playwright.sync_api import expect

    user = User.objects.create_user("gus", password="gus-password-1")
    dataset = make_dataset(user, name="digits")
    for index in range(26):  # one more than a page
        make_experiment(user, dataset, name=f"old run {index}", status=Experiment.Status.RUNNING)
    with browser_page(monkeypatch) as page:
        log_in(page, web_server, "gus", "gus-password-1")
        page.goto(web_server + "/?ap=2")
        expect(page.locator("body[data-console-live=connected]")).to_have_count(1)
        newest = make_experiment(user, dataset, name="newest run", status=Experiment.Status.QUEUED)
        as_a_worker(lambda: Experiment.objects.get(pk=newest.pk).changed("Queued"))
        expect(page.locator(".live-notice")).to_contain_text("1 new or changed — show")
        expect(page.locator(f'tr[data-row="experiment-{newest.pk}"]')).to_have_count(0)


def test_an_outsider_console_never_shows_the_row(web_server, monkeypatch):
    from playwright.sync_api import expect

    owner = User.objects.create_user("gus", password="gus-password-1")
    User.objects.create_user("ivy", password="ivy-password-1")
    dataset = make_dataset(owner)
    with browser_page(monkeypatch) as page:
        log_in(page, web_server, "ivy", "ivy-password-1")
        page.goto(web_server + "/")
        expect(page.locator("body[data-console-live=connected]")).to_have_count(1)
        hidden = make_experiment(owner, dataset, name="private run", status=Experiment.Status.RUNNING)
        shared = make_experiment(owner, dataset, name="shared run", status=Experiment.Status.RUNNING,
                                 visibility=Visibility.ORGANISATION)  # fmt: skip
        as_a_worker(lambda: [Experiment.objects.get(pk=pk).changed("Running") for pk in (hidden.pk, shared.pk)])
        # The shared one comes (it could not, were the dataset's name leaked: the row says it is hidden).
        expect(page.locator(f'tr[data-row="experiment-{shared.pk}"]')).to_contain_text("a dataset you cannot see")
        expect(page.locator(f'tr[data-row="experiment-{hidden.pk}"]')).to_have_count(0)
        assert "private run" not in page.content()
        # Narrowed: the row goes.
        Experiment.objects.filter(pk=shared.pk).update(visibility=Visibility.PRIVATE)
        expect(page.locator(f'tr[data-row="experiment-{shared.pk}"]')).to_have_count(0, timeout=10_000)


def test_the_sweep_page_fills_in_as_its_members_train_and_finish(web_server, monkeypatch):
    from playwright.sync_api import expect

    user = User.objects.create_user("gus", password="gus-password-1")
    dataset = make_dataset(user, name="digits")
    sweep = Sweep.objects.create(owner=user, name="rates")
    members = [make_experiment(user, dataset, name=f"rate {rate}", sweep=sweep, learning_rate=rate,
                               status=Experiment.Status.RUNNING, epochs=2) for rate in (0.1, 0.01)]  # fmt: skip
    EpochMetric.objects.filter(experiment__in=members).delete()
    with browser_page(monkeypatch) as page:
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        log_in(page, web_server, "gus", "gus-password-1")
        page.goto(web_server + sweep.get_absolute_url())
        expect(page.locator("body[data-live=connected]")).to_have_count(1)
        page.wait_for_timeout(500)

        def train(experiment, accuracy):
            run = Run(Experiment.objects.get(pk=experiment.pk))
            for epoch in (1, 2):
                run.on_epoch({"epoch": epoch, "train_loss": 1 / epoch, "val_loss": 0.5 / epoch,
                              "val_accuracy": accuracy * epoch / 2, "learning_rate": 0.01,
                              "images_per_second": 100.0, "seconds": 1.0})  # fmt: skip
            run.experiment.finish(Experiment.Status.DONE)

        for experiment, accuracy in zip(members, (0.9, 0.6), strict=True):
            as_a_worker(lambda e=experiment, a=accuracy: train(e, a))
        for experiment, best in zip(members, ("90%", "60%"), strict=True):
            row = page.locator(f'#sweep-table tr[data-experiment="{experiment.pk}"]')
            expect(row.locator(".status")).to_have_text("Done")
            expect(row.locator(".sweep-epoch")).to_have_text("2")
            expect(row.locator(".sweep-train-loss")).to_have_text("0.5000")
            expect(row.locator(".sweep-best")).to_have_text(best)
        expect(page.locator("body[data-sweep-active='0']")).to_have_count(1)
        shot(page, "sweep-live")
        assert not errors, errors
