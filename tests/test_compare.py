"""Experiments compared: the console's ticks, the page's settings with their differences,
the metrics and curves side by side — only for experiments the viewer may see — and the
page itself in Chromium."""

import re
from datetime import timedelta

import numpy as np
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import User, Visibility
from evaluations import core
from evaluations.models import Evaluation
from tests.browser import browser_page, log_in, platform_server, shot  # noqa: F401 - platform_server is a fixture
from tests.factories import make_dataset, make_experiment
from training.models import EpochMetric

COMPARE = reverse("experiment-compare")


def with_curve(experiment, losses, accuracies, rates, seconds=10.0):
    """Epochs 1..n after the one make_experiment wrote, each `seconds` long."""
    start = experiment.metrics.get().created
    EpochMetric.objects.filter(experiment=experiment).delete()
    for epoch, (loss, accuracy, rate) in enumerate(zip(losses, accuracies, rates, strict=True), start=1):
        row = EpochMetric.objects.create(
            experiment=experiment, epoch=epoch, train_loss=loss, val_loss=loss + 0.1, val_accuracy=accuracy,
            learning_rate=rate, seconds=seconds,
        )  # fmt: skip
        EpochMetric.objects.filter(pk=row.pk).update(created=start + timedelta(seconds=epoch * seconds))
    experiment.started = start
    experiment.save(update_fields=["started"])
    return experiment


@pytest.fixture
def pair(alice, team):
    dataset = make_dataset(alice, visibility=Visibility.TEAM, team=team)
    slow = make_experiment(alice, dataset, name="slow sgd", visibility=Visibility.TEAM, team=team, learning_rate=0.01)
    fast = make_experiment(
        alice, dataset, name="fast adam", visibility=Visibility.TEAM, team=team, learning_rate=0.1, solver="adam",
        options={"augmentation": {"flip": "fliplr"}},
    )  # fmt: skip
    with_curve(slow, [2.0, 1.5, 1.2], [0.4, 0.55, 0.6], [0.01, 0.01, 0.01], seconds=10)
    with_curve(fast, [1.5, 0.9, 1.0], [0.6, 0.8, 0.75], [0.1, 0.1, 0.1], seconds=4)
    return slow, fast


def ids(*experiments):
    return {"ids": ",".join(str(e.pk) for e in experiments)}


def no_inline_scripts(html):
    return all("src=" in tag for tag in re.findall(r"<script[^>]*>", html) if "json" not in tag)


def test_it_sets_the_settings_side_by_side_and_marks_the_differences(client, alice, pair):
    slow, fast = pair
    client.force_login(alice)
    response = client.get(COMPARE, ids(slow, fast))
    assert response.status_code == 200
    rows = {row["key"]: row for row in response.context["settings_rows"]}
    assert rows["learning_rate"]["values"] == ["0.01", "0.1"] and rows["learning_rate"]["differs"]
    assert rows["solver"]["values"] == ["sgd", "adam"] and rows["solver"]["differs"]
    assert rows["augmentation.flip"]["values"] == ["none", "fliplr"] and rows["augmentation.flip"]["differs"]
    assert rows["augmentation.flip"]["label"] == "Flipping"  # the form's own label
    assert rows["epochs"]["values"] == ["2", "2"] and not rows["epochs"]["differs"]
    assert rows["dataset"]["values"] == [slow.dataset.name] * 2
    assert rows["weight_decay"]["values"] == ["0.0001 (learning rate / 100)", "0.001 (learning rate / 100)"]
    assert rows["lr_policy.policy"]["label"] == "Learning rate policy"
    assert {row["key"] for row in rows.values() if row["differs"]} == {
        "learning_rate", "solver", "augmentation.flip", "weight_decay"
    }  # fmt: skip
    html = response.content.decode()
    assert re.search(r'<tr data-setting="solver" class="differs">', html)
    assert re.search(r'<tr data-setting="epochs">', html)
    assert no_inline_scripts(html)


def test_it_sets_final_and_best_metrics_side_by_side_with_the_curves(client, alice, pair):
    slow, fast = pair
    client.force_login(alice)
    response = client.get(COMPARE, ids(slow, fast))
    metrics = {row["key"]: row["cells"] for row in response.context["metric_rows"]}
    assert [c["text"] for c in metrics["train_loss"]] == ["1.2000", "1.0000"]
    assert [c["best"] for c in metrics["train_loss"]] == [False, True]
    assert [c["text"] for c in metrics["best_val_accuracy"]] == ["60.00% (epoch 3)", "80.00% (epoch 2)"]
    assert [c["text"] for c in metrics["val_accuracy"]] == ["60.00%", "75.00%"]
    assert [c["text"] for c in metrics["seconds"]] == ["30.0 s", "12.0 s"]
    curves = response.context["curves"]
    assert [c["name"] for c in curves] == ["slow sgd", "fast adam"]
    assert [(p["epoch"], p["wall"], p["learning_rate"]) for p in curves[1]["points"]] == [
        (1, 4.0, 0.1), (2, 8.0, 0.1), (3, 12.0, 0.1)
    ]  # fmt: skip


def test_owner_and_team_member_compare_an_outsider_gets_404(client, alice, bob, charlie, pair):
    for user, status in ((alice, 200), (bob, 200), (charlie, 404)):
        client.force_login(user)
        assert client.get(COMPARE, ids(*pair)).status_code == status, user


def test_hidden_ids_are_left_out_silently(client, alice, bob, pair):
    slow, fast = pair
    secret = make_experiment(alice, name="alice's secret")
    client.force_login(bob)
    response = client.get(COMPARE, {"ids": f"{slow.pk},{secret.pk},{fast.pk},99999"})
    assert response.status_code == 200
    assert [e.name for e in response.context["experiments"]] == ["slow sgd", "fast adam"]
    assert "alice's secret" not in response.content.decode()

    # One left: a plain message, no charts; none left: as if nothing were there.
    alone = client.get(COMPARE, {"ids": f"{slow.pk},{secret.pk}"})
    assert alone.status_code == 200
    assert "Pick at least two experiments to compare" in alone.content.decode()
    assert "curves-data" not in alone.content.decode()
    assert client.get(COMPARE, {"ids": f"{secret.pk},99999"}).status_code == 404


def test_ids_that_are_not_numbers_are_a_plain_400(client, alice):
    client.force_login(alice)
    for query in ({"ids": "1,two"}, {}, {"ids": ""}):
        response = client.get(COMPARE, query)
        assert response.status_code == 400
        assert "by their numbers, separated by commas" in response.content.decode()


def test_the_console_ticks_what_may_be_compared_without_its_script_too(client, alice, charlie, pair):
    slow, fast = pair
    client.force_login(alice)
    console = client.get(reverse("console")).content.decode()
    for experiment in pair:
        assert f'name="ids" value="{experiment.pk}" form="compare-form"' in console
    assert f'action="{COMPARE}"' in console and "js/console.js" in console
    assert no_inline_scripts(console)
    # The form's plain submission repeats `ids`: the page takes that as well.
    response = client.get(COMPARE, {"ids": [slow.pk, fast.pk]})
    assert [e.name for e in response.context["experiments"]] == ["slow sgd", "fast adam"]
    client.force_login(charlie)
    assert f'value="{slow.pk}" form="compare-form"' not in client.get(reverse("console")).content.decode()


def test_the_sweep_page_draws_with_the_same_shared_script(client, alice):
    from training.models import Sweep

    sweep = Sweep.objects.create(name="lr sweep", owner=alice)
    make_experiment(alice, sweep=sweep)
    client.force_login(alice)
    html = client.get(sweep.get_absolute_url()).content.decode()
    assert "js/curves.js" in html and "js/sweep.js" in html and no_inline_scripts(html)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_compare_page_in_chromium(platform_server, monkeypatch):  # noqa: F811
    from playwright.sync_api import expect

    viewer = User.objects.create_user("alice", password="alice-password")
    slow, fast = (
        with_curve(make_experiment(viewer, name="slow sgd", learning_rate=0.01), [2.0, 1.5, 1.2], [0.4, 0.55, 0.6],
                   [0.01, 0.01, 0.005], seconds=10),
        with_curve(make_experiment(viewer, name="fast adam", learning_rate=0.1, solver="adam"), [1.5, 0.9, 1.0],
                   [0.6, 0.8, 0.75], [0.1, 0.1, 0.1], seconds=4),
    )  # fmt: skip
    with browser_page(monkeypatch) as page:
        log_in(page, platform_server, "alice", "alice-password")
        expect(page.locator("#compare-form button")).to_be_disabled()
        page.check(f'input[value="{slow.pk}"][form="compare-form"]')
        page.check(f'input[value="{fast.pk}"][form="compare-form"]')
        page.click("#compare-form button")
        # The console lists the newest first, and so does the page.
        page.wait_for_url(re.compile(rf"/experiments/compare/\?ids={fast.pk},{slow.pk}$"))
        expect(page.locator("#settings tr.differs")).to_have_count(3)  # learning rate, solver, weight decay
        lines = (
            "Array.from(document.querySelectorAll('canvas[data-curve]'), c => Chart.getChart(c).data.datasets.length)"
        )
        assert page.evaluate(lines) == [2, 2, 2, 2]
        page.check('input[name="x-axis"][value="wall"]')
        chart = "Chart.getChart(document.querySelector('canvas[data-curve=train_loss]'))"
        wall = f"{chart}.data.datasets.map(d => d.data.map(p => p.x))"
        assert page.evaluate(wall) == [[4, 8, 12], [10, 20, 30]]
        shot(page, "compare")
        page.check("#only-differences")
        expect(page.locator("#settings tbody tr:visible")).to_have_count(3)


def evaluated(experiment, labels, predicted, *, classes=("cat", "dog"), status=Evaluation.Status.DONE, **source):
    """A finished evaluation of `experiment` whose results are core.metrics() of the given
    true and predicted classes (numbers into `classes`), as the job stores them."""
    labels, predicted = np.array(labels, np.int32), np.array(predicted, np.int16)
    top = np.stack([predicted, 1 - predicted], axis=1).astype(np.int16)
    rows = core.Rows(labels, top, np.tile(np.array([0.9, 0.1], np.float32), (len(labels), 1)))
    fields = {"visibility": experiment.visibility, "team": experiment.team, **source}
    fields.setdefault("source", Evaluation.Source.SPLIT if "split" in source else Evaluation.Source.FOLDER)
    return Evaluation.objects.create(
        owner=experiment.owner, experiment=experiment, snapshot_epoch=2, status=status,
        results=core.metrics(rows, list(classes)), **fields,
    )  # fmt: skip


def table_of(response, source):
    (table,) = [t for t in response.context["tables"] if t["source"] == source]
    return table


def test_evaluations_of_the_same_images_are_set_side_by_side_per_class(client, alice, bob, pair):
    slow, fast = pair
    # Validation split: slow gets cat 2/2 and dog 1/2; fast gets cat 1/2 and dog 2/2.
    evaluated(slow, [0, 0, 1, 1], [0, 0, 0, 1], split="val")
    evaluated(fast, [0, 0, 1, 1], [0, 1, 1, 1], split="val")
    evaluated(slow, [0, 1], [0, 1], path="/data/digits")
    evaluated(fast, [0, 1], [1, 1], path="/data/digits")
    evaluated(fast, [0, 1], [0, 0], path="/data/digits", status=Evaluation.Status.RUNNING)  # not finished
    evaluated(slow, [0, 1], [0, 1], path="/data/only-slow")  # nothing to set it beside
    evaluated(slow, [0, 1], [0, 1], source=Evaluation.Source.ARCHIVE, path="/up/1/a.zip", upload_name="a.zip")
    evaluated(fast, [0, 1], [0, 0], source=Evaluation.Source.ARCHIVE, path="/up/2/a.zip", upload_name="a.zip")
    # Alice's own, not shared: bob must not see it, nor learn that it exists.
    evaluated(slow, [0, 1], [0, 1], path="/data/private", visibility=Visibility.PRIVATE, team=None)
    evaluated(fast, [0, 1], [0, 1], path="/data/private")
    client.force_login(alice)
    response = client.get(COMPARE, ids(slow, fast))
    assert [t["source"] for t in response.context["tables"]] == [
        "/data/private", "uploaded “a.zip”", "/data/digits", "the validation images"
    ]  # fmt: skip
    val = table_of(response, "the validation images")
    assert [e.experiment.name for e in val["columns"]] == ["slow sgd", "fast adam"]
    assert [[c["text"] for c in row["cells"]] for row in val["overall"]] == [["75.0%", "75.0%"], ["100.0%", "100.0%"]]
    cat, dog = val["classes"]
    # precision, recall, F1 of slow, then of fast.
    assert (cat["label"], [c["text"] for c in cat["cells"]]) == (
        "cat", ["66.7%", "100.0%", "80.0%", "100.0%", "50.0%", "66.7%"]
    )  # fmt: skip
    assert [c["best"] for c in cat["cells"]] == [False, True, True, True, False, False]
    assert [c["best"] for c in dog["cells"]] == [True, False, False, False, True, True]
    digits = table_of(response, "/data/digits")
    assert digits["overall"][0]["cells"] == [{"text": "100.0%", "best": True}, {"text": "50.0%", "best": False}]
    html = response.content.decode()
    assert '<td class="best">100.0%</td>' in html and 'data-source="uploaded “a.zip”"' in html
    assert no_inline_scripts(html)

    client.force_login(bob)
    response = client.get(COMPARE, ids(slow, fast))
    assert "/data/private" not in [t["source"] for t in response.context["tables"]]
    assert "/data/private" not in response.content.decode()


def test_the_evaluations_cost_the_same_queries_however_many(client, alice, pair):
    slow, fast = pair
    client.force_login(alice)
    evaluated(slow, [0, 1], [0, 1], split="val")
    evaluated(fast, [0, 1], [0, 1], split="val")
    with CaptureQueriesContext(connection) as few:
        assert len(client.get(COMPARE, ids(slow, fast)).context["tables"]) == 1
    for n in range(6):
        evaluated(slow, [0, 1], [0, 1], path=f"/data/{n}")
        evaluated(fast, [0, 1], [1, 1], path=f"/data/{n}")
    with CaptureQueriesContext(connection) as many:
        assert len(client.get(COMPARE, ids(slow, fast)).context["tables"]) == 7
    assert len(many) == len(few)
