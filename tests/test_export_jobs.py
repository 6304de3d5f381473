"""Exports as jobs: a real worker exports a snapshot of a real short LeNet training as ONNX
and StableHLO, the open experiment page hears of it, the zip is downloaded and its model
gives the platform's probabilities; the access rule on every page, endpoint and download;
a snapshot deleted meanwhile is a clear failure."""

import asyncio
import io
import json
import re
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.urls import reverse
from django.utils.html import escape

from accounts.models import Visibility
from datasets.models import Dataset
from jobs.models import job_models
from tests.browser import browser_page, log_in, platform_server, shot  # noqa: F401 - platform_server is a fixture
from tests.conftest import ROOT, run_worker, subprocess_env
from tests.factories import make_token
from tests.test_evaluations import make_trained, trained_files  # noqa: F401 - trained_files is a fixture
from tests.test_training import websocket
from training.models import Experiment, Export

pytestmark = pytest.mark.django_db(transaction=True)


def token_client(client, user):
    key = make_token(user).key

    def call(method, path, **kwargs):
        return getattr(client, method)(path, HTTP_AUTHORIZATION=f"Token {key}", **kwargs)

    return call


def exports_url(experiment, epoch):
    return f"/api/experiments/{experiment.pk}/snapshots/{epoch:g}/exports/"


def zip_of(response):
    return zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))


def test_exports_are_jobs_that_recovery_covers():
    assert Export in job_models()


def test_a_worker_exports_a_snapshot_as_each_format_and_the_page_hears_of_it(client, alice, trained_files):  # noqa: F811
    experiment = make_trained(alice, trained_files)
    snapshot = experiment.snapshots.get()
    api = token_client(client, alice)
    client.force_login(alice)
    created = {fmt: api("post", exports_url(experiment, snapshot.epoch), data={"format": fmt}) for fmt in
               ("onnx", "stablehlo")}  # fmt: skip
    assert {fmt: r.status_code for fmt, r in created.items()} == {"onnx": 201, "stablehlo": 201}
    ids = {fmt: r.json()["id"] for fmt, r in created.items()}
    assert created["onnx"].json()["status"] == "queued" and created["onnx"].json()["download"] is None
    assert created["onnx"].json()["requested_by"] == alice.username
    assert Export.objects.get(pk=ids["onnx"]).requested_by == alice
    # Asking again while it is under way is the same job.
    again = api("post", exports_url(experiment, snapshot.epoch), data={"format": "onnx"})
    assert again.status_code == 200 and again.json()["id"] == ids["onnx"]

    async def watch():
        communicator = websocket(f"/ws/experiments/{experiment.pk}/", client)
        assert (await communicator.connect())[0]
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "manage.py", "rqworker", "--burst", "training", cwd=ROOT, env=subprocess_env()
        )
        done = set()
        statuses = []
        while done != set(ids.values()):
            event = await communicator.receive_json_from(timeout=120)
            if event["type"] == "export":
                statuses.append((event["format"], event["status"]))
                if event["status"] in ("done", "failed"):
                    done.add(event["id"])
        assert await worker.wait() == 0
        await communicator.disconnect()
        return statuses

    statuses = asyncio.run(watch())
    assert ("onnx", "running") in statuses and ("onnx", "done") in statuses and ("stablehlo", "done") in statuses

    dataset = experiment.dataset
    images = np.load(dataset.directory / "val_images.npy")[:64].astype(np.float32)
    from training import engine, inference

    model, mean, augmentation = inference.predictor(snapshot)
    platform = engine.predict(model, images, mean, augmentation)
    for fmt, pk in ids.items():
        body = api("get", f"/api/exports/{pk}/").json()
        assert (body["status"], body["error"], body["format"], body["snapshot"]) == ("done", "", fmt, snapshot.epoch)
        assert body["download"] == f"http://testserver/api/exports/{pk}/download/"
        download = api("get", f"/api/exports/{pk}/download/")
        assert download.status_code == 200 and download["Content-Type"] == "application/zip"
        archive = zip_of(download)
        model_file = {"onnx": "model.onnx", "stablehlo": "model.stablehlo"}[fmt]
        assert sorted(archive.namelist()) == sorted(
            [model_file, "labels.txt", "preprocessing.json", "info.json", "classify.py", "README.md"]
        )
        assert archive.read("labels.txt").decode().splitlines() == dataset.classes
        preprocessing = json.loads(archive.read("preprocessing.json"))
        assert (preprocessing["width"], preprocessing["height"], preprocessing["channels"]) == (28, 28, 1)
        assert preprocessing["inside"] == "the dataset's mean image is subtracted, then pixels are divided by 255"
        assert json.loads(archive.read("info.json"))["epoch"] == snapshot.epoch
        from training import export_formats

        run = export_formats.run_onnx if fmt == "onnx" else export_formats.run_stablehlo
        np.testing.assert_allclose(run(archive.read(model_file), images), platform, atol=1e-4)
        export = Export.objects.get(pk=pk)
        assert export.size_bytes == Path(export.path).stat().st_size
        assert not list(export.directory.glob("*.partial"))
        assert "images of the dataset" in export.log_lines.last().message

    # The page: a download link in the snapshot's row, the same file.
    page = client.get(experiment.get_absolute_url()).content.decode()
    onnx = Export.objects.get(pk=ids["onnx"])
    assert onnx.get_download_url() in page
    assert zip_of(client.get(onnx.get_download_url())).read("labels.txt") == archive.read("labels.txt")
    # Deleting the experiment takes the exports' files with it.
    experiment.delete()
    assert not onnx.directory.exists()


def test_a_snapshot_deleted_meanwhile_fails_with_a_clear_message(client, alice, trained_files):  # noqa: F811
    experiment = make_trained(alice, trained_files)
    api = token_client(client, alice)
    response = api("post", exports_url(experiment, trained_files["epoch"]), data={"format": "stablehlo"})
    assert response.status_code == 201
    snapshot = experiment.snapshots.get()
    Path(snapshot.path).unlink()
    snapshot.delete()

    run_worker("training")

    export = Export.objects.get()
    assert export.status == "failed"
    assert export.error == ("The snapshot of epoch 2 was deleted before it could be exported; export another snapshot.")
    body = api("get", f"/api/exports/{export.pk}/").json()
    assert (body["status"], body["error"], body["download"]) == ("failed", export.error, None)
    assert api("get", f"/api/exports/{export.pk}/download/").status_code == 404


def test_bad_input_is_a_plain_400_or_404(client, alice, trained_files):  # noqa: F811
    experiment = make_trained(alice, trained_files)
    api = token_client(client, alice)
    url = exports_url(experiment, trained_files["epoch"])
    wrong = api("post", url, data={"format": "tflite"})
    assert wrong.status_code == 400
    assert wrong.json()["errors"]["format"] == [
        "Select a valid choice. tflite is not one of the available choices. Valid: onnx, stablehlo."
    ]
    assert api("post", url, data={}).json()["errors"] == {"format": ["This field is required."]}
    assert api("post", url, data={"format": "onnx", "epoch": 2}).status_code == 400
    assert api("post", exports_url(experiment, 7), data={"format": "onnx"}).status_code == 404
    assert (
        api("post", f"/api/experiments/{experiment.pk}/snapshots/two/exports/", data={"format": "onnx"}).status_code
        == 404
    )
    client.force_login(alice)
    snapshot = experiment.snapshots.get()
    page = client.post(
        reverse("snapshot-exports", args=[experiment.pk, snapshot.pk]), {"format": "tflite"}, follow=True
    )
    assert "Select a valid choice" in page.content.decode()
    assert Export.objects.count() == 0


# --- Who may see what -------------------------------------------------------------------------


def finished_export(experiment):
    """A done export with a file, as a worker leaves it (the worker's part is tested above)."""
    snapshot = experiment.snapshots.get()
    export = Export.objects.create(
        experiment=experiment, snapshot=snapshot, snapshot_epoch=snapshot.epoch, format="onnx", status="done"
    )
    export.directory.mkdir(parents=True)
    path = export.directory / export.filename
    path.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    Export.objects.filter(pk=export.pk).update(path=str(path), size_bytes=22)
    export.refresh_from_db()
    return export


def test_the_access_rule_covers_every_page_endpoint_and_download(client, alice, bob, charlie, team, trained_files):  # noqa: F811
    experiment = make_trained(alice, trained_files, visibility=Visibility.TEAM, team=team)
    snapshot = experiment.snapshots.get()
    export = finished_export(experiment)
    apis = {user.username: token_client(client, user) for user in (alice, bob, charlie)}
    reads = [
        (None, reverse("snapshot-exports", args=[experiment.pk, snapshot.pk])),
        (None, export.get_download_url()),
        ("api", f"/api/exports/{export.pk}/"),
        ("api", f"/api/exports/{export.pk}/download/"),
        ("api", f"/api/exports/{export.pk}/log/"),
    ]

    def answers(user):
        client.force_login(user)
        got = [(apis[user.username]("get", url) if kind else client.get(url)).status_code for kind, url in reads]
        page = client.get(experiment.get_absolute_url())
        got.append(page.status_code)
        if page.status_code == 200:
            html = page.content.decode()
            got.append("download" if export.get_download_url() in html else "no download")
            got.append("exports" if 'class="exports"' in html else "no exports")
        return got

    assert answers(alice) == [200] * 6 + ["download", "exports"]
    assert answers(bob) == [200] * 6 + ["download", "exports"]
    assert 'name="format" value="stablehlo"' in client.get(experiment.get_absolute_url()).content.decode()
    assert answers(charlie) == [404] * 6
    for user, status in ((charlie, 404), (bob, 201)):
        posted = apis[user.username]("post", exports_url(experiment, snapshot.epoch), data={"format": "stablehlo"})
        assert posted.status_code == status, user
    assert posted.json()["requested_by"] == "bob"  # a member's, not the owner's
    client.force_login(charlie)
    assert (
        client.post(reverse("snapshot-exports", args=[experiment.pk, snapshot.pk]), {"format": "onnx"}).status_code
        == 404
    )
    client.force_login(bob)
    page = client.post(reverse("snapshot-exports", args=[experiment.pk, snapshot.pk]), {"format": "onnx"})
    assert page.status_code == 302 and page.url == experiment.get_absolute_url() + "#snapshots-card"
    assert Export.objects.filter(format="onnx").count() == 1  # done already: the same export
    fragment = client.get(reverse("snapshot-exports", args=[experiment.pk, snapshot.pk])).content.decode()
    assert "StableHLO" in fragment and "Queued" in fragment  # bob's, waiting for a worker

    # The file holds the dataset's labels and mean image: a viewer of the experiment who may
    # not see its dataset is refused, in words, and offered nothing on the page.
    Dataset.objects.filter(pk=experiment.dataset_id).update(visibility=Visibility.PRIVATE)
    assert answers(bob) == [403, 403, 200, 403, 200, 200, "no download", "no exports"]
    denied = apis["bob"]("get", f"/api/exports/{export.pk}/download/").json()
    assert denied["detail"] == (
        "Exports hold the labels and the mean image of this experiment's dataset, which you may not see."
    )
    assert apis["bob"]("get", f"/api/exports/{export.pk}/").json()["download"] is None
    assert apis["bob"]("post", exports_url(experiment, snapshot.epoch), data={"format": "onnx"}).status_code == 403
    assert escape(denied["detail"]) in client.get(experiment.get_absolute_url()).content.decode()

    # Narrowing the experiment narrows its exports.
    Experiment.objects.filter(pk=experiment.pk).update(visibility=Visibility.PRIVATE)
    assert answers(bob) == [404] * 6
    assert answers(alice) == [200] * 6 + ["download", "exports"]


def test_a_network_a_format_cannot_hold_says_why_instead_of_offering_it(client, alice, trained_files):  # noqa: F811
    experiment = make_trained(alice, trained_files)
    Experiment.objects.filter(pk=experiment.pk).update(network="resnet")
    client.force_login(alice)
    html = client.get(experiment.get_absolute_url()).content.decode()
    assert 'name="format" value="stablehlo"' in html
    assert 'name="format" value="onnx"' not in html
    assert "ResNet-20 does not export to ONNX: jax2onnx converts it, but onnxruntime rejects the file" in html
    # Tried anyway (the API takes it), the job's reason is shown in the row.
    snapshot = experiment.snapshots.get()
    Export.objects.create(
        experiment=experiment, snapshot=snapshot, snapshot_epoch=snapshot.epoch, format="onnx", status="failed",
        error="jax2onnx converted the network, but onnxruntime rejects the result: Incompatible dimensions",
    )  # fmt: skip
    html = client.get(experiment.get_absolute_url()).content.decode()
    assert "ONNX failed: jax2onnx converted the network, but onnxruntime rejects the result" in html


@pytest.mark.browser
def test_a_person_exports_from_the_page_and_the_link_appears_live(platform_server, trained_files, monkeypatch):  # noqa: F811
    from playwright.sync_api import expect

    from accounts.models import User

    person = User.objects.create_user("dana", password="dana-password")
    experiment = make_trained(person, trained_files)
    with browser_page(monkeypatch) as page:
        log_in(page, platform_server, "dana", "dana-password")
        page.goto(platform_server + experiment.get_absolute_url())
        page.click('#snapshots button[value="stablehlo"]')
        # The worker's events reach the open page, which fetches the row's cell again.
        link = page.locator('#snapshots .export[data-format="stablehlo"] a')
        expect(link).to_have_attribute("href", Export.objects.get().get_download_url(), timeout=60_000)
        expect(link).to_have_attribute("title", re.compile(r"^Exported \d+ \w+ \d{4} \d\d:\d\d, asked for by dana$"))
        shot(page, "experiment-export")
    assert Export.objects.get().status == "done"
