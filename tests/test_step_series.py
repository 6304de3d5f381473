"""The experiment page's figures: the training curve at iteration resolution (stored,
cut down, served, downloaded), the rows and snapshots the job writes, and what the page
says of them."""

import asyncio
import csv
import io
import json
import re
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from channels.layers import get_channel_layer
from django.urls import reverse
from django.utils import timezone

from tests.factories import make_dataset, make_experiment
from training import schedules, series
from training.jobs import Run
from training.models import EpochMetric, Snapshot


@pytest.fixture(autouse=True)
def own_data_root(settings, tmp_path):
    """Experiment folders of this module's own: ids repeat between tests, and a later test's
    experiment must not find this one's steps."""
    settings.DATA_ROOT = str(tmp_path)


# --- pure: the interval, the file, the cut-down --------------------------------------


def test_k_gives_an_epoch_fifty_points_and_a_run_at_most_a_hundred_thousand():
    assert series.step_interval(30, 10) == 1  # an epoch shorter than 50 batches: every batch
    assert series.step_interval(937, 30) == 18  # MNIST in batches of 64: 52 points an epoch
    assert series.step_interval(10_000, 1000) == 200  # ten million steps: K grows
    for steps, epochs in ((30, 10), (937, 30), (10_000, 1000), (123_457, 3)):
        k = series.step_interval(steps, epochs)
        assert steps // k >= min(steps, 50) or steps * epochs / k <= series.MAX_POINTS
        assert steps * epochs / k <= series.MAX_POINTS


def test_the_cut_down_keeps_every_spike_and_dip():
    rng = np.random.default_rng(0)
    values = 2.0 * np.exp(-np.arange(1_000_000) / 200_000) + rng.normal(0, 0.01, 1_000_000)
    values[123_457] = 9.5  # a spike
    values[876_543] = -3.0  # a dip
    values[5] = np.nan  # a non-number never wins a bucket
    picked = series.downsample(values)
    assert len(picked) <= series.CHART_POINTS
    assert (np.diff(picked) > 0).all()
    assert {123_457, 876_543} <= set(picked.tolist()) and 5 not in picked
    assert values[picked].max() == 9.5 and np.nanmin(values[picked]) == -3.0
    # Each bucket's own extremes too: the envelope of the curve is the same.
    buckets = np.array_split(np.nan_to_num(values, nan=2.0), 1000)
    assert np.nanmax(values[picked][-2:]) == pytest.approx(buckets[-1].max())
    np.testing.assert_array_equal(series.downsample(values[:1500]), np.arange(1500))


def test_a_resumed_run_replaces_the_steps_it_trains_again(tmp_path):
    path = tmp_path / series.FILE_NAME
    series.append(path, np.arange(1, 11), np.linspace(2, 1, 10), np.full(10, 0.5), np.arange(10.0))
    # Resumed from the snapshot at step 6: steps 7 and on are trained again.
    series.append(path, np.arange(7, 13), np.full(6, 0.9), np.full(6, 0.7), np.arange(6.0) + 20)
    records = series.read(path)
    np.testing.assert_array_equal(records["step"], np.arange(1, 13))
    assert records["loss"][5] == pytest.approx(1 + 1 / 9 * 4) and (records["loss"][6:] == np.float32(0.9)).all()
    with open(path, "ab") as f:
        f.write(b"\0" * 7)  # a writer killed mid-record
    assert len(series.read(path)) == 12
    assert len(series.read(tmp_path / "missing.bin")) == 0


def test_the_learning_rate_is_drawn_at_the_step_it_changes():
    # Multi-step at 55 % of 3 epochs of 100 batches: the drop is at 1.65 epochs.
    config = SimpleNamespace(
        learning_rate=0.1, epochs=3, lr_policy=schedules.LRPolicy(policy="multistep", multistep_values=(55,))
    )
    points = series.learning_rate_points(config, 100)
    assert points == [(0.0, 0.1), (165.0, pytest.approx(0.05)), (300.0, pytest.approx(0.05))]
    # A rate that glides changes every update: cut down to a chart's worth, ends kept.
    config = SimpleNamespace(learning_rate=0.1, epochs=100, lr_policy=schedules.LRPolicy(policy="poly"))
    points = series.learning_rate_points(config, 10_000)
    assert len(points) <= series.CHART_POINTS + 1 and points[0] == (0.0, 0.1) and points[-1][0] == 1_000_000


# --- the job's callbacks ---------------------------------------------------------------


def listen(group):
    """What the group is sent from now on: call the result with how many events to read.

    The channel lives in an event loop of its own that runs meanwhile, as a web server's
    does: the channel layer keeps its subscriptions per loop, and hears only while it runs."""
    layer = get_channel_layer()
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    def run(coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=20)

    channel = run(layer.new_channel())
    run(layer.group_add(group, channel))

    async def receive(count):
        return [(await asyncio.wait_for(layer.receive(channel), 10))["event"] for _ in range(count)]

    return lambda count: run(receive(count))


@pytest.mark.django_db
def test_a_validation_within_an_epoch_says_how_fast_the_epoch_went(alice):
    experiment = make_experiment(alice, status="running")
    Run(experiment).on_validation(1.5, 0.3, 0.9, 812.5, 4.25)
    row = EpochMetric.objects.get(experiment=experiment, epoch=1.5)
    assert (row.train_loss, row.val_loss, row.images_per_second, row.seconds) == (None, 0.3, 812.5, 4.25)


@pytest.mark.django_db
def test_a_snapshot_carries_only_the_validation_measured_where_it_was_taken(alice):
    experiment = make_experiment(alice, status="running", keep_snapshots=0)
    run = Run(experiment)
    run.on_validation(1, 0.25, 0.988, 800.0, 3.0)
    run.on_snapshot(1, b"weights of epoch 1")
    run.on_snapshot(1.0581, b"weights where it was aborted")
    at_end, aborted = Snapshot.objects.get(epoch=1), Snapshot.objects.get(epoch=1.0581)
    assert (at_end.val_loss, at_end.val_accuracy) == (0.25, 0.988)
    assert (aborted.val_loss, aborted.val_accuracy) == (None, None)

    client_page = _page(alice, experiment)
    assert "98.8%" in client_page  # one decimal, as the log says it


@pytest.mark.django_db
def test_retention_tells_the_page_which_snapshot_went(alice):
    experiment = make_experiment(alice, status="running", keep_snapshots=1)
    receive = listen(experiment.group_name)
    run = Run(experiment)
    for epoch in (1, 2):
        run.on_validation(epoch, 1.0 / epoch, 0.5, 800.0, 3.0)
        run.on_snapshot(epoch, b"weights")
    first = Snapshot.objects.filter(experiment=experiment).get()  # epoch 1 went (not the best)
    events = receive(4)
    removed = [e for e in events if e["type"] == "snapshot_removed"]
    assert first.epoch == 2 and len(removed) == 1 and removed[0]["epoch"] == 1
    assert [e["type"] for e in events if e["type"].startswith("snapshot")] == [
        "snapshot",
        "snapshot",
        "snapshot_removed",
    ]


@pytest.mark.django_db
def test_the_steps_are_stored_and_sent_small(alice):
    experiment = make_experiment(alice, status="running", started=timezone.now())
    receive = listen(experiment.group_name)
    run = Run(experiment)
    now = time.time()
    n = 1000
    run.on_steps(np.arange(1, n + 1), np.linspace(2, 0.1, n), np.linspace(0.1, 0.9, n), now + np.arange(n) / 100)
    assert len(series.read(experiment.directory / series.FILE_NAME)) == n
    (event,) = receive(1)
    assert event["type"] == "steps" and len(event["loss"]["step"]) <= series.LIVE_POINTS
    assert event["loss"]["step"][0] == 1 and event["loss"]["step"][-1] == n and event["count"] == n


# --- the page, the zoom and the download ------------------------------------------------


def _page(user, experiment):
    from django.test import Client

    client = Client()
    client.force_login(user)
    response = client.get(experiment.get_absolute_url())
    assert response.status_code == 200
    return response.content.decode()


def _script_data(page, name):
    return json.loads(re.search(rf'<script id="{name}" type="application/json">(.*?)</script>', page, re.S).group(1))


def _write_steps(experiment, n, spike_at=None):
    steps = np.arange(1, n + 1)
    losses = (2.0 * np.exp(-steps / (n / 5))).astype(np.float32)
    if spike_at is not None:
        losses[spike_at - 1] = 7.5
    experiment.directory.mkdir(parents=True, exist_ok=True)
    series.append(experiment.directory / series.FILE_NAME, steps, losses, 1 - losses / 2, time.time() + steps / 1000)


@pytest.mark.django_db
def test_a_million_step_run_opens_as_fast_as_a_thousand_step_one(alice):
    dataset = make_dataset(alice, counts={"train": [320_000, 320_000], "val": [10, 10]})
    timings, sizes = {}, {}
    for n in (1_000, 1_000_000):
        experiment = make_experiment(alice, dataset, epochs=100, batch_size=64, started=timezone.now())
        _write_steps(experiment, n, spike_at=n // 3)
        _page(alice, experiment)  # warm: templates and imports
        started = time.perf_counter()
        page = _page(alice, experiment)
        timings[n] = time.perf_counter() - started
        sizes[n] = len(page)
        chart = _script_data(page, "steps-data")
        assert chart["count"] == n and chart["steps_per_epoch"] == 10_000
        assert len(chart["loss"]["step"]) <= series.CHART_POINTS
        assert max(chart["loss"]["value"]) == 7.5  # the spike survives the cut-down
        assert chart["learning_rate"]["step"][0] == 0
    print(
        f"\nexperiment page: 1,000 steps {1000 * timings[1_000]:.0f} ms, {sizes[1_000] / 1024:.0f} KiB; "
        f"1,000,000 steps {1000 * timings[1_000_000]:.0f} ms, {sizes[1_000_000] / 1024:.0f} KiB"
    )
    assert sizes[1_000_000] < 400 * 1024


@pytest.mark.django_db
def test_a_zoomed_chart_gets_the_steps_in_its_range(client, alice, charlie):
    experiment = make_experiment(alice, started=timezone.now())
    _write_steps(experiment, 100_000)
    url = reverse("experiment-steps", args=[experiment.pk])
    client.force_login(alice)
    zoomed = client.get(url, {"start": 5000, "end": 5999}).json()
    steps = zoomed["loss"]["step"]
    assert steps[0] == 4999 and steps[-1] == 6000 and len(steps) == 1002  # every step, one beyond each end
    for bad in ("a lot", "1.5", "-1", str(10**30)):
        assert client.get(url, {"start": bad}).status_code == 400
    client.force_login(charlie)
    assert client.get(url).status_code == 404


@pytest.mark.django_db
def test_the_whole_series_downloads_as_csv_for_those_who_may_see_it(client, alice, bob, charlie, team):
    experiment = make_experiment(alice, visibility="team", team=team, started=timezone.now())
    _write_steps(experiment, 25_000)
    url = reverse("experiment-metrics-csv", args=[experiment.pk])
    client.force_login(bob)
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    train = [r for r in rows if r["kind"] == "train"]
    assert len(train) == 25_000 and train[0]["step"] == "1" and train[-1]["step"] == "25000"
    assert [r["kind"] for r in rows[25_000:]] == ["epoch"] and rows[-1]["val_accuracy"] == "0.61"
    client.force_login(charlie)
    assert client.get(url).status_code == 404


@pytest.mark.django_db
def test_the_progress_line_counts_epochs_from_one(alice):
    experiment = make_experiment(
        alice, status="running", epochs=3, progress={"epoch": 3, "step": 5, "steps": 10, "images_per_second": 9}
    )
    page = _page(alice, experiment)
    assert "Epoch 3 of 3: batch 5 of 10" in page and "Epoch 4" not in page
