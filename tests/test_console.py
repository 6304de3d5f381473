"""The console at scale: paged, filtered, searched and sorted lists whose cost does not grow
with what a user may see."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from accounts.models import Visibility
from datasets.models import Dataset
from tests.factories import make_dataset
from training.console import PAGE_SIZE
from training.models import EpochMetric, Experiment


def many_experiments(owner, count, dataset, **fields):
    experiments = Experiment.objects.bulk_create(
        Experiment(owner=owner, dataset=dataset, name=f"run {i:05d}", status="done", **fields) for i in range(count)
    )
    EpochMetric.objects.bulk_create(
        EpochMetric(experiment=e, epoch=1, train_loss=0.5, val_loss=0.4, val_accuracy=0.9) for e in experiments
    )
    return experiments


def console_queries(client):
    with CaptureQueriesContext(connection) as queries:
        assert client.get(reverse("console")).status_code == 200
    return len(queries)


def test_the_console_costs_the_same_at_10_and_at_2000_experiments(client, alice, bob, team):
    dataset = make_dataset(alice, visibility=Visibility.TEAM, team=team)
    many_experiments(alice, 10, dataset, visibility=Visibility.TEAM, team=team)
    client.force_login(bob)
    small = console_queries(client)
    many_experiments(alice, 1990, dataset, visibility=Visibility.TEAM, team=team)
    Dataset.objects.bulk_create(
        Dataset(owner=alice, name=f"set {i}", visibility=Visibility.TEAM, team=team, status="done") for i in range(300)
    )
    assert console_queries(client) == small
    page = client.get(reverse("console")).content.decode()
    assert f"1–{PAGE_SIZE} of 2,000" in page and f"1–{PAGE_SIZE} of 301" in page


def test_the_console_filters_searches_sorts_and_pages_and_keeps_the_choice_in_the_url(client, alice, charlie):
    dataset = make_dataset(alice)
    many_experiments(alice, 30, dataset)
    Experiment.objects.create(owner=alice, dataset=dataset, name="the odd one", status="failed")
    client.force_login(alice)

    page = client.get(reverse("console"), {"q": "odd"}).content.decode()
    assert "the odd one" in page and "run 00001" not in page
    page = client.get(reverse("console"), {"status": "failed"}).content.decode()
    assert "the odd one" in page and "run 00001" not in page
    page = client.get(reverse("console"), {"sort": "name"}).content.decode()
    assert page.index("run 00000") < page.index("run 00024") and "run 00029" not in page
    # The next page keeps the sort and the filters.
    assert "?sort=name&amp;fp=2" in page
    page = client.get(reverse("console"), {"sort": "name", "fp": 2}).content.decode()
    assert "run 00029" in page and "run 00000" not in page and "the odd one" in page
    page = client.get(reverse("console"), {"owner": "charlie"}).content.decode()
    assert "run 00001" not in page and "No finished experiment yet." in page


def test_the_console_shows_only_what_the_user_may_see(client, alice, charlie):
    many_experiments(alice, 3, make_dataset(alice))
    client.force_login(charlie)
    page = client.get(reverse("console"), {"owner": "alice"}).content.decode()
    assert "run 00001" not in page


@pytest.mark.parametrize("bad", [{"status": "nonsense"}, {"sort": "'; drop"}, {"fp": "x"}, {"team": "999"}])
def test_bad_filters_are_ignored_not_an_error(client, alice, bad):
    many_experiments(alice, 2, make_dataset(alice))
    client.force_login(alice)
    assert client.get(reverse("console"), bad).status_code == 200
