"""Classify many: a snapshot of a real short training run over many real MNIST digits, on
real workers, from every kind of source; the metrics, the pages, the downloads, the API,
the socket and the access rule on each of them."""

import asyncio
import csv
import io
import json
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings
from django.urls import reverse

from accounts.models import User, Visibility
from config.asgi import application  # noqa: F401 - the socket's application, set up once
from datasets.forms import DatasetForm
from datasets.models import Dataset
from evaluations import core
from evaluations.models import Evaluation
from jobs.models import job_models
from tests.browser import browser_page, log_in, platform_server, shot  # noqa: F401 - platform_server is a fixture
from tests.conftest import ROOT, run_worker, subprocess_env
from tests.factories import make_token
from tests.test_training import experiment_form, websocket
from training.forms import ExperimentForm
from training.models import Experiment, Snapshot

pytestmark = pytest.mark.django_db(transaction=True)

DATASET_FIELDS = ["width", "height", "channels", "resize_mode", "classes", "counts", "encoding"]
EXPERIMENT_FIELDS = ["network", "epochs", "batch_size", "learning_rate", "solver", "seed", "options"]


# --- A trained snapshot, made once --------------------------------------------------------


@pytest.fixture(scope="module")
def trained_files(django_db_setup, django_db_blocker, mnist_root, tmp_path_factory):
    """A real dataset build and a real two-epoch training on real MNIST, once for the
    module: the files and the rows' fields are kept, the rows removed (each test's
    database starts empty), and `trained` makes rows of its own from them."""
    keep = tmp_path_factory.mktemp("trained")
    with django_db_blocker.unblock():
        user = User.objects.create_user("trainer", password="trainer-password")
        form = DatasetForm(
            data={"name": "mnist", "source_folder": str(mnist_root / "train"), "channels": 1, "width": 28,
                  "height": 28, "resize_mode": "squash", "val_percent": 20, "visibility": "private",
                  "source_type": "folder", "encoding": "raw", "seed": 0, "min_per_class": 1, "shuffle": "on"},
            user=user,
        )  # fmt: skip
        assert form.is_valid(), form.errors
        dataset = form.create(user)
        run_worker("datasets")
        dataset.refresh_from_db()
        assert dataset.status == Dataset.Status.DONE, dataset.error
        form = ExperimentForm(data=experiment_form(dataset), user=user)
        assert form.is_valid(), form.errors
        _, (experiment,) = form.create()
        run_worker("training")
        experiment.refresh_from_db()
        assert experiment.status == Experiment.Status.DONE, experiment.error
        snapshot = experiment.snapshots.first()
        shutil.copytree(dataset.directory, keep / "dataset")
        shutil.copy(snapshot.path, keep / "snapshot.ckpt")
        files = {
            "dataset": {name: getattr(dataset, name) for name in DATASET_FIELDS},
            "experiment": {name: getattr(experiment, name) for name in EXPERIMENT_FIELDS},
            "epoch": snapshot.epoch,
            "root": keep,
        }
        experiment.delete()
        dataset.delete()
        user.delete()
    return files


def make_trained(owner, files, *, visibility=Visibility.PRIVATE, team=None):
    dataset = Dataset.objects.create(
        owner=owner, name="mnist", status=Dataset.Status.DONE, visibility=visibility, team=team, **files["dataset"]
    )
    shutil.copytree(files["root"] / "dataset", dataset.directory)
    experiment = Experiment.objects.create(
        owner=owner, name="lenet", dataset=dataset, status=Experiment.Status.DONE, visibility=visibility, team=team,
        **files["experiment"],
    )  # fmt: skip
    experiment.directory.mkdir(parents=True, exist_ok=True)
    path = experiment.directory / "snapshot.ckpt"
    shutil.copy(files["root"] / "snapshot.ckpt", path)
    Snapshot.objects.create(experiment=experiment, epoch=files["epoch"], path=str(path))
    return experiment


@pytest.fixture
def trained(alice, trained_files):
    return make_trained(alice, trained_files)


@pytest.fixture
def api(client, alice):
    token = make_token(alice)

    def call(method, path, **kwargs):
        return getattr(client, method)(path, HTTP_AUTHORIZATION=f"Token {token.key}", **kwargs)

    return call


def evaluate(api, experiment, **source):
    response = api("post", f"/api/experiments/{experiment.pk}/evaluations/", data=source)
    assert response.status_code == 201, response.content
    run_worker("training")
    evaluation = Evaluation.objects.get(pk=response.json()["id"])
    return evaluation


def digits_folder(mnist_root, name, per_class=10, classes=("0", "1", "2")):
    """Real test digits as class folders under the import root."""
    folder = Path(settings.DATA_IMPORT_ROOTS[0]) / name
    shutil.rmtree(folder, ignore_errors=True)
    for label in classes:
        (folder / label).mkdir(parents=True)
        for path in sorted((mnist_root / "test" / label).glob("*.png"))[:per_class]:
            shutil.copy(path, folder / label / path.name)
    return folder


# --- The metrics, by hand -------------------------------------------------------------------


def test_the_metrics_match_a_case_worked_by_hand():
    # True:      0 0 0 1 1 2 -   (the last has no label)
    # Predicted: 0 0 1 1 2 2 0
    labels = np.array([0, 0, 0, 1, 1, 2, -1], np.int32)
    predicted = np.array([0, 0, 1, 1, 2, 2, 0])
    second = np.array([1, 1, 0, 0, 1, 0, 1])
    top = np.stack([predicted, second, np.full(7, 2)], axis=1).astype(np.int16)
    top[3, 2], top[4, 2], top[5, 2] = 2, 0, 1  # keep each row's classes distinct
    probabilities = np.tile(np.array([0.7, 0.2, 0.1], np.float32), (7, 1))
    rows = core.Rows(labels, top, probabilities)

    result = core.metrics(rows, ["a", "b", "c"])

    assert result["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert [sum(row) for row in result["confusion"]] == [3, 2, 1]  # each class's count
    assert (result["count"], result["scored"]) == (7, 6)
    assert result["top1"] == pytest.approx(4 / 6)
    # With three classes every true class is among the top 5.
    assert result["top5"] == pytest.approx(1.0)
    a, b, c = result["per_class"]
    assert (a["precision"], a["recall"], a["support"]) == (1.0, pytest.approx(2 / 3), 3)
    assert (b["precision"], b["recall"]) == (0.5, 0.5)
    assert (c["precision"], c["recall"], c["f1"]) == (0.5, 1.0, pytest.approx(2 / 3))
    assert a["f1"] == pytest.approx(0.8)

    # Seven classes: the first image's class is outside its top 5, the second's inside.
    wide = core.Rows(
        np.array([0, 3], np.int32), np.array([[1, 2, 3, 4, 5]] * 2, np.int16), np.full((2, 5), 0.2, np.float32)
    )
    assert (core.metrics(wide, list("abcdefg"))["top1"], core.metrics(wide, list("abcdefg"))["top5"]) == (0.0, 0.5)

    assert core.cell(rows, 0, 1).tolist() == [2]
    assert sorted(core.cell(rows, 0, 0).tolist()) == [0, 1]
    assert core.confident_mistakes(rows).tolist() == [2, 4]  # the unlabelled row is no mistake


def test_a_list_line_is_a_path_with_an_optional_label_by_name_or_number():
    entries, problems = core.parse_list(
        b"a/one.png 3\nb/two.png seven\nwith space.png\n# a note\n\nc/three.png zebra\na/one.png 2\n",
        ["zero", "one", "two", "three", "four", "five", "six", "seven"],
    )
    items = [(line, item.path, item.label, item.given) for line, item in entries]
    assert items == [
        (1, "a/one.png", 3, ""),
        (2, "b/two.png", 7, ""),
        (3, "with space.png", -1, ""),
        (6, "c/three.png", -1, "zebra"),
    ]
    assert problems == [(7, "a/one.png: a repeat of line 1")]


def test_evaluations_are_jobs_that_recovery_covers():
    assert Evaluation in job_models()


# --- Sources, on a real worker --------------------------------------------------------------


def test_the_validation_split_evaluates_with_live_progress(client, alice, trained, api):
    client.force_login(alice)
    response = client.post(reverse("evaluation-new", args=[trained.pk]), {"source": "split", "split": "val"})
    evaluation = Evaluation.objects.get()
    assert response.status_code == 302 and response.url == evaluation.get_absolute_url()
    assert (evaluation.owner, evaluation.visibility, evaluation.status) == (alice, "private", "queued")
    assert evaluation.snapshot_epoch == 2  # the newest by default

    async def watch():
        communicator = websocket(f"/ws/evaluations/{evaluation.pk}/", client)
        connected, _ = await communicator.connect()
        assert connected
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "manage.py", "rqworker", "--burst", "training", cwd=ROOT, env=subprocess_env()
        )
        events = []
        while not (events and events[-1]["type"] == "status" and events[-1]["status"] == "done"):
            events.append(await communicator.receive_json_from(timeout=120))
        assert await worker.wait() == 0
        await communicator.disconnect()
        return events

    events = asyncio.run(watch())
    evaluation.refresh_from_db()
    assert evaluation.status == "done", evaluation.error
    val = trained.dataset.counts["val"]
    progress = [e for e in events if e["type"] == "progress" and e["total"]]
    assert progress[-1] == {**progress[-1], "done": sum(val), "total": sum(val)}

    body = api("get", f"/api/evaluations/{evaluation.pk}/").json()
    assert body["status"] == "done"
    assert (body["count"], body["progress_done"], body["progress_total"]) == (sum(val), sum(val), sum(val))
    assert body["labels"] == trained.dataset.classes
    # Rows are the true classes: each sums to that class's count in the split.
    assert [sum(row) for row in body["confusion"]] == val
    assert [entry["support"] for entry in body["per_class"]] == val
    assert body["top1"] > 0.5 and body["top5"] >= body["top1"]
    assert body["top1"] == pytest.approx(sum(np.diag(body["confusion"])) / sum(val))
    assert body["skipped"] == []

    page = client.get(evaluation.get_absolute_url())
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="confusion"' in html and 'id="per-class"' in html and 'id="mistakes"' in html
    assert f"/evaluations/{evaluation.pk}/images/?true=3&amp;predicted=3" in html
    assert len(page.context["top_per_class"]) == 10

    lines = list(
        csv.reader(
            io.StringIO(
                b"".join(client.get(reverse("evaluation-csv", args=[evaluation.pk])).streaming_content).decode()
            )
        )
    )
    assert lines[0][:4] == ["path", "true_label", "label_1", "probability_1"]
    assert len(lines) == sum(val) + 1
    records = json.loads(client.get(reverse("evaluation-json", args=[evaluation.pk])).content)
    assert len(records) == sum(val) and len(records[0]["top"]) == 5
    api_csv = api("get", f"/api/evaluations/{evaluation.pk}/results.csv")
    assert api_csv.status_code == 200 and b"".join(api_csv.streaming_content).decode().count("\n") == sum(val) + 1

    thumbnail = client.get(reverse("evaluation-image", args=[evaluation.pk, 0]))
    assert thumbnail.status_code == 200 and thumbnail["Content-Type"] == "image/png"
    assert client.get(reverse("evaluation-image", args=[evaluation.pk, sum(val)])).status_code == 404

    experiment_page = client.get(trained.get_absolute_url()).content.decode()
    assert evaluation.get_absolute_url() in experiment_page
    assert reverse("evaluation-new", args=[trained.pk]) in experiment_page


def test_the_confusion_cell_gallery_shows_exactly_its_images(client, alice, trained, api, mnist_root):
    folder = digits_folder(mnist_root, "cells", per_class=30, classes=[str(d) for d in range(10)])
    evaluation = evaluate(api, trained, folder=str(folder))
    assert evaluation.status == "done", evaluation.error
    rows, names = evaluation.rows(), evaluation.names()["names"]
    client.force_login(alice)
    confusion = evaluation.results["confusion"]
    wrong = max(((i, j) for i in range(10) for j in range(10) if i != j), key=lambda c: confusion[c[0]][c[1]])
    for true, predicted in [(4, 4), wrong]:
        shown, page = [], 1
        while True:
            response = client.get(
                reverse("evaluation-images", args=[evaluation.pk]), {"true": true, "predicted": predicted, "page": page}
            )
            assert response.status_code == 200
            shown += [entry["name"] for entry in response.context["images"]]
            if not response.context["page"].has_next():
                break
            page += 1
        expected = [names[i] for i in range(len(rows)) if rows.labels[i] == true and rows.predicted[i] == predicted]
        assert sorted(shown) == sorted(expected)
        assert len(shown) == confusion[true][predicted]
        assert all(name.startswith(f"{true}/") for name in shown)
    bad = client.get(reverse("evaluation-images", args=[evaluation.pk]), {"true": "x", "predicted": 1})
    assert bad.status_code == 400
    assert (
        client.get(reverse("evaluation-images", args=[evaluation.pk]), {"true": 10, "predicted": 1}).status_code == 400
    )


def test_a_folder_with_corrupt_files_and_an_unknown_class(client, alice, trained, api, mnist_root):
    folder = digits_folder(mnist_root, "mixed")
    (folder / "1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "2" / "notes.txt").write_text("not a picture")
    (folder / "letters").mkdir()
    for path in sorted((mnist_root / "test" / "7").glob("*.png"))[:2]:
        shutil.copy(path, folder / "letters" / path.name)

    evaluation = evaluate(api, trained, folder=str(folder))

    assert evaluation.status == "done", evaluation.error
    body = api("get", f"/api/evaluations/{evaluation.pk}/").json()
    assert body["count"] == 32  # 30 digits and the 2 of the unknown class: classified
    assert sum(map(sum, body["confusion"])) == 30  # only the known ones scored
    assert body["unknown_labels"] == {"letters": 2}
    reasons = {entry["path"]: entry["reason"] for entry in body["skipped"]}
    assert "not an image" in reasons["1/broken.png"] or "corrupt" in reasons["1/broken.png"]
    assert reasons["2/notes.txt"] == "not an image (by its name)"
    client.force_login(alice)
    page = client.get(evaluation.get_absolute_url()).content.decode()
    assert "letters" in page and "1/broken.png" in page
    names = evaluation.names()
    unknown = names["names"].index(next(n for n in names["names"] if n.startswith("letters/")))
    records = json.loads(client.get(reverse("evaluation-json", args=[evaluation.pk])).content)
    assert records[unknown]["true_label"] == "letters"
    assert client.get(reverse("evaluation-image", args=[evaluation.pk, unknown])).status_code == 200


def test_a_list_on_the_server_and_an_uploaded_one(client, alice, trained, api, mnist_root):
    folder = digits_folder(mnist_root, "listed", per_class=3)
    files = sorted(folder.glob("*/*.png"))
    lines = [f"{files[0].relative_to(folder)} 0", f"{files[3].relative_to(folder)} 1",
             f"{files[6].relative_to(folder)}", f"{files[7].relative_to(folder)} zebra",
             "/etc/passwd.png 1", "0/missing.png 0"]  # fmt: skip
    (folder / "list.txt").write_text("\n".join(lines) + "\n")

    on_server = evaluate(api, trained, list=str(folder / "list.txt"))

    assert on_server.status == "done", on_server.error
    body = api("get", f"/api/evaluations/{on_server.pk}/").json()
    assert body["count"] == 4
    assert sum(map(sum, body["confusion"])) == 2  # the labelled ones the network knows
    assert body["unknown_labels"] == {"zebra": 1}
    assert {entry["reason"] for entry in body["skipped"]} == {"outside the import folders", "file not found"}
    assert on_server.names()["names"][0] == lines[0].split()[0]  # as the list wrote it

    # Uploaded, relative paths are taken from the import roots.
    uploaded = io.BytesIO(
        "".join(f"{path.relative_to(settings.DATA_IMPORT_ROOTS[0])} {path.parent.name}\n" for path in files).encode()
    )
    uploaded.name = "mine.txt"
    evaluation = evaluate(api, trained, list=uploaded)
    assert evaluation.status == "done", evaluation.error
    assert evaluation.results["scored"] == 9 and evaluation.upload_name == "mine.txt"


def test_an_uploaded_archive_of_class_folders(client, alice, trained, api, mnist_root):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label in ("3", "8"):
            for path in sorted((mnist_root / "test" / label).glob("*.png"))[:5]:
                archive.write(path, f"digits/{label}/{path.name}")
        archive.writestr("digits/8/readme.md", "hello")
    buffer.seek(0)
    buffer.name = "digits.zip"

    evaluation = evaluate(api, trained, archive=buffer)

    assert evaluation.status == "done", evaluation.error
    assert evaluation.results["count"] == 10 and evaluation.upload_name == "digits.zip"
    assert not (evaluation.upload_dir / "archive.zip").exists()  # extracted, then removed
    # Its folder (the extracted images, the rows) counts towards the team's storage quota.
    on_disk = sum(path.stat().st_size for path in evaluation.directory.rglob("*") if path.is_file())
    assert evaluation.size_bytes == on_disk > sum(path.stat().st_size for path in evaluation.upload_dir.rglob("*.png"))
    client.force_login(alice)
    assert client.get(reverse("evaluation-image", args=[evaluation.pk, 0])).status_code == 200

    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w:gz") as archive:
        data = (mnist_root / "test" / "3").glob("*.png").__next__().read_bytes()
        info = tarfile.TarInfo("../../escape/3/x.png")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    evil.seek(0)
    evil.name = "evil.tar.gz"
    refused = api("post", f"/api/experiments/{trained.pk}/evaluations/", data={"archive": evil})
    assert refused.status_code == 400
    assert ".." in " ".join(refused.json()["errors"]["archive"])


def test_bad_input_is_refused_in_plain_words(client, alice, trained, api, mnist_root, tmp_path):
    url = f"/api/experiments/{trained.pk}/evaluations/"
    both = api("post", url, data={"split": "val", "folder": "/x"}, content_type="application/json")
    assert both.status_code == 400 and "exactly one" in both.json()["errors"]["source"][0]
    none = api("post", url, data={}, content_type="application/json")
    assert none.status_code == 400
    outside = api("post", url, data={"folder": "/etc"}, content_type="application/json")
    assert outside.status_code == 400 and "outside the import folders" in outside.json()["errors"]["folder"][0]
    empty = Path(settings.DATA_IMPORT_ROOTS[0]) / "empty-folder"
    empty.mkdir(exist_ok=True)
    nothing = api("post", url, data={"folder": str(empty)}, content_type="application/json")
    assert nothing.status_code == 400 and "no class subfolders" in nothing.json()["errors"]["folder"][0]
    no_split = api("post", url, data={"split": "test"}, content_type="application/json")
    assert no_split.status_code == 400 and "split" in no_split.json()["errors"]
    unknown_epoch = api("post", url, data={"split": "val", "snapshot": 99}, content_type="application/json")
    assert unknown_epoch.status_code == 404

    million = io.BytesIO(b"".join(b"d/%d.png\n" % i for i in range(1_000_000)))
    million.name = "million.txt"
    capped = api("post", url, data={"list": million})
    assert capped.status_code == 400
    assert "1,000,000 images; at most 100,000" in capped.json()["errors"]["list"][0]
    empty_list = io.BytesIO(b"# nothing here\n")
    empty_list.name = "empty.txt"
    assert "names no image" in api("post", url, data={"list": empty_list}).json()["errors"]["list"][0]

    client.force_login(alice)
    page = client.post(reverse("evaluation-new", args=[trained.pk]), {"source": "folder", "folder": "/etc"})
    assert page.status_code == 200
    assert "outside the import folders" in " ".join(page.context["form"].errors["folder"])
    assert Evaluation.objects.count() == 0


def test_a_snapshot_deleted_meanwhile_fails_with_a_clear_message(trained, api):
    response = api("post", f"/api/experiments/{trained.pk}/evaluations/", data={"split": "val"})
    assert response.status_code == 201
    snapshot = trained.snapshots.get()
    Path(snapshot.path).unlink()
    snapshot.delete()

    run_worker("training")

    evaluation = Evaluation.objects.get()
    assert evaluation.status == "failed"
    assert evaluation.error == (
        "The snapshot of epoch 2 was deleted before the evaluation could use it; evaluate again with another snapshot."
    )
    assert api("get", f"/api/evaluations/{evaluation.pk}/").json()["error"] == evaluation.error


def test_ten_thousand_stored_images_are_an_ordinary_job(trained, api):
    dataset = trained.dataset
    val_x = np.load(dataset.directory / "val_images.npy")
    val_y = np.load(dataset.directory / "val_labels.npy")
    repeat = -(-10_000 // len(val_y))
    np.save(dataset.directory / "test_images.npy", np.tile(val_x, (repeat, 1, 1, 1))[:10_000])
    np.save(dataset.directory / "test_labels.npy", np.tile(val_y, repeat)[:10_000])
    dataset.counts = {**dataset.counts, "test": np.bincount(np.tile(val_y, repeat)[:10_000], minlength=10).tolist()}
    dataset.save()

    evaluation = evaluate(api, trained, split="test")

    assert evaluation.status == "done", evaluation.error
    assert evaluation.results["count"] == 10_000
    assert [sum(row) for row in evaluation.results["confusion"]] == dataset.counts["test"]
    assert evaluation.rows_path.stat().st_size < 1_000_000  # compact: no row per image in the database


# --- Who may see what -------------------------------------------------------------------------


def urls(evaluation):
    pk = evaluation.pk
    return [
        evaluation.get_absolute_url(),
        reverse("evaluation-images", args=[pk]) + "?true=0&predicted=0",
        reverse("evaluation-image", args=[pk, 0]),
        reverse("evaluation-image-inside", args=[pk, 0]),
        reverse("evaluation-csv", args=[pk]),
        reverse("evaluation-json", args=[pk]),
        f"/api/evaluations/{pk}/",
        f"/api/evaluations/{pk}/results.csv",
        f"/api/experiments/{evaluation.experiment_id}/evaluations/",
    ]


async def socket_opens(client, evaluation):
    communicator = websocket(f"/ws/evaluations/{evaluation.pk}/", client)
    connected, code = await communicator.connect()
    if connected:
        await communicator.disconnect()
    return connected, code


def test_the_access_rule_covers_every_page_download_api_and_socket(client, alice, bob, charlie, team, trained_files):
    experiment = make_trained(alice, trained_files, visibility=Visibility.TEAM, team=team)
    tokens = {user.username: make_token(user).key for user in (alice, bob, charlie)}
    response = client.post(
        f"/api/experiments/{experiment.pk}/evaluations/",
        {"split": "val"},
        HTTP_AUTHORIZATION=f"Token {tokens['alice']}",
    )
    assert response.status_code == 201
    run_worker("training")
    evaluation = Evaluation.objects.get()
    assert evaluation.status == "done", evaluation.error
    assert (evaluation.visibility, evaluation.team) == ("team", team)  # as its experiment

    def answers(user):
        client.force_login(user)
        return [
            client.get(url, HTTP_AUTHORIZATION=f"Token {tokens[user.username]}").status_code for url in urls(evaluation)
        ]

    assert answers(alice) == [200] * 9
    assert answers(bob) == [200] * 9
    assert answers(charlie) == [404] * 9
    client.force_login(charlie)
    assert asyncio.run(socket_opens(client, evaluation)) == (False, 4404)
    assert client.get(reverse("evaluation-new", args=[experiment.pk])).status_code == 404
    denied = client.post(
        f"/api/experiments/{experiment.pk}/evaluations/",
        {"split": "val"},
        HTTP_AUTHORIZATION=f"Token {tokens['charlie']}",
    )
    assert denied.status_code == 404
    assert client.post(reverse("evaluation-delete", args=[evaluation.pk])).status_code == 404
    client.force_login(bob)
    assert asyncio.run(socket_opens(client, evaluation))[0] is True
    assert client.post(reverse("evaluation-delete", args=[evaluation.pk])).status_code == 403
    by_bob = client.post(
        f"/api/experiments/{experiment.pk}/evaluations/", {"split": "val"}, HTTP_AUTHORIZATION=f"Token {tokens['bob']}"
    )
    assert by_bob.status_code == 201 and by_bob.json()["visibility"] == "team"

    # Narrowing the experiment narrows its evaluations, whatever their rows say.
    Experiment.objects.filter(pk=experiment.pk).update(visibility=Visibility.PRIVATE)
    assert answers(bob) == [404] * 9
    client.force_login(bob)
    assert asyncio.run(socket_opens(client, evaluation)) == (False, 4404)
    assert evaluation.get_absolute_url() not in client.get(experiment.get_absolute_url()).content.decode()
    assert answers(alice) == [200] * 9
    client.force_login(alice)
    assert evaluation.rows_path.exists()
    assert client.post(reverse("evaluation-delete", args=[evaluation.pk])).status_code == 302
    assert not Evaluation.objects.filter(pk=evaluation.pk).exists()
    assert not evaluation.directory.exists()


def test_a_file_is_served_only_if_the_evaluation_recorded_it(client, alice, trained, api, mnist_root):
    evaluation = evaluate(api, trained, folder=str(digits_folder(mnist_root, "served", per_class=2)))
    client.force_login(alice)
    count = evaluation.results["count"]
    assert client.get(reverse("evaluation-image", args=[evaluation.pk, count - 1])).status_code == 200
    assert client.get(reverse("evaluation-image", args=[evaluation.pk, count])).status_code == 404
    # A path is never taken from the request: the query string is ignored.
    assert client.get(reverse("evaluation-image", args=[evaluation.pk, 0]), {"path": "/etc/passwd"}).status_code == 200

    # Inside the network for one recorded image: the same snapshot says what the job recorded.
    inside = client.get(reverse("evaluation-image-inside", args=[evaluation.pk, count - 1]))
    assert inside.status_code == 200
    rows = evaluation.rows()
    labels = evaluation.results["labels"]
    shown = [p.label for p in inside.context["classification"].predictions]
    assert shown[:3] == [labels[int(i)] for i in rows.top_indices[count - 1, :3]]
    assert inside.context["classification"].layers and 'id="layers"' in inside.content.decode()
    assert client.get(reverse("evaluation-image-inside", args=[evaluation.pk, count])).status_code == 404
    evaluation.snapshot.delete()
    assert client.get(reverse("evaluation-image-inside", args=[evaluation.pk, 0])).status_code == 404


# --- In a browser ------------------------------------------------------------------------------


@pytest.mark.browser
def test_a_person_evaluates_the_test_folder_and_opens_a_cell(platform_server, trained_files, mnist_root, monkeypatch):  # noqa: F811
    from playwright.sync_api import expect

    dana = User.objects.create_user("dana", password="dana-password-1")
    experiment = make_trained(dana, trained_files)
    with browser_page(monkeypatch) as page:
        log_in(page, platform_server, "dana", "dana-password-1")
        page.goto(platform_server + experiment.get_absolute_url())
        page.click("#classify-many")
        page.check("input[name=source][value=folder]")
        page.fill("#id_folder", str(mnist_root / "test"))
        page.click("button:has-text('Classify')")
        expect(page.locator("#status")).to_have_text("Done", timeout=120_000)
        expect(page.locator("#confusion tbody tr")).to_have_count(10)
        # Thumbnails load through the access rule (lazily: scrolled to, as a person would).
        page.locator("#top-per-class img").last.scroll_into_view_if_needed()
        page.wait_for_function("[...document.querySelectorAll('#top-per-class img')].at(-1).naturalWidth > 0")
        shot(page, "evaluation")
        cell = page.locator("#confusion a[data-true='5'][data-predicted='5']")
        count = int(cell.inner_text())
        cell.click()
        expect(page.locator("h1")).to_contain_text("True 5, predicted 5")
        expect(page.locator("#gallery > li")).to_have_count(min(count, 48))
        page.wait_for_function("[...document.querySelectorAll('#gallery img')].every((img) => img.naturalWidth > 0)")
        shot(page, "evaluation-cell")
        # Each image opens inside the network: its top 5 and every layer, from the evaluation's snapshot.
        name = page.locator("#gallery .ev-name").first.inner_text()
        page.locator("#gallery > li a").first.click()
        expect(page.locator("h1")).to_have_text(name)
        expect(page.locator("#predictions tbody td").first).to_have_text("5")
        expect(page.locator("#layers tbody tr").first).to_be_visible()
        assert page.locator("#layers tbody tr").count() >= 5
        page.wait_for_function("document.querySelectorAll('#layers canvas[data-histogram]').length > 0")
        shot(page, "evaluation-image-inside")
