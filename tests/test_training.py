"""Training on a real worker: a real run on real MNIST, the live stream, classify."""

import asyncio
import io
import subprocess
import sys

import numpy as np
import pytest
from channels.testing import WebsocketCommunicator
from django.urls import reverse
from PIL import Image

from config.asgi import application
from datasets.models import Dataset
from tests.conftest import ROOT, subprocess_env
from tests.factories import make_dataset, make_token
from training.forms import data_with_defaults
from training.models import EpochMetric, Experiment

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def mnist_dataset(client, alice, mnist_root, worker):
    """A built dataset: 10 classes of real MNIST digits, 28×28 grayscale."""
    client.force_login(alice)
    client.post(
        reverse("dataset-new"),
        {"name": "mnist slice", "source_folder": str(mnist_root / "train"), "channels": 1, "width": 28,
         "height": 28, "resize_mode": "squash", "val_percent": 20, "visibility": "private"},
    )  # fmt: skip
    worker("datasets")
    dataset = Dataset.objects.get()
    assert dataset.status == Dataset.Status.DONE, dataset.error
    return dataset


def experiment_form(dataset, **overrides):
    """What a person submits: the page's defaults, with a few fields changed."""
    data = {
        "name": "lenet", "dataset": dataset.pk, "network": "lenet", "epochs": 2, "batch_size": 32,
        "solver": "adam", "learning_rate": 0.001, "lr_policy": "fixed", "seed": 0, "visibility": "private",
    }  # fmt: skip
    return data_with_defaults({**data, **overrides})


def png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def websocket(path, client, origin=b"http://localhost"):
    headers = [(b"origin", origin), (b"host", b"localhost")]  # as a browser on http://localhost sends them
    if "sessionid" in client.cookies:
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


async def next_event(communicator, event_type, timeout):
    while True:
        event = await communicator.receive_json_from(timeout=timeout)
        if event["type"] == event_type:
            return event


def test_a_worker_trains_lenet_and_the_socket_sees_each_epoch(client, alice, mnist_dataset, mnist_root):
    response = client.post(reverse("experiment-new"), experiment_form(mnist_dataset))
    experiment = Experiment.objects.get()
    assert response.status_code == 302
    assert experiment.status == Experiment.Status.QUEUED

    async def train_while_watching():
        communicator = websocket(f"/ws/experiments/{experiment.pk}/", client)
        connected, _ = await communicator.connect()
        assert connected
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "manage.py", "rqworker", "--burst", "training", cwd=ROOT, env=subprocess_env()
        )
        first = await next_event(communicator, "epoch", timeout=240)
        second = await next_event(communicator, "epoch", timeout=120)
        assert await worker.wait() == 0
        await communicator.disconnect()
        return first, second

    first, second = asyncio.run(train_while_watching())

    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.DONE, experiment.error
    assert (first["epoch"], second["epoch"]) == (1, 2)
    rows = list(EpochMetric.objects.filter(experiment=experiment))
    # The socket adds where the event came from and its number (jobs.events).
    assert [row.as_event() for row in rows] == [
        {key: value for key, value in event.items() if key not in ("group", "seq")} for event in (first, second)
    ]
    # Ten classes: chance is 10%. A few hundred real digits and two epochs do far better.
    assert rows[-1].val_accuracy > 0.5
    assert rows[-1].train_loss < rows[0].train_loss
    assert [s.epoch for s in experiment.snapshots.all()] == [2, 1]

    # Classify a real test digit with the newest snapshot, on the page and through the API.
    seven = next((mnist_root / "test" / "7").glob("*.png")).read_bytes()
    snapshot = experiment.snapshots.first()
    page = client.post(
        reverse("experiment-classify", args=[experiment.pk]),
        {"snapshot": snapshot.pk, "image": io.BytesIO(seven)},
    )
    classification = page.context["classification"]
    assert classification.pixels.shape == (28, 28, 1)
    predictions = classification.predictions
    assert len(predictions) == 5
    assert sum(p.probability for p in predictions) <= 1.0 + 1e-6
    assert predictions == sorted(predictions, key=lambda p: -p.probability)

    token = make_token(alice)
    # A large color JPEG of the same digit goes through the dataset's own preprocessing.
    big = np.array(Image.open(io.BytesIO(seven)).convert("RGB").resize((300, 300)))
    jpeg = io.BytesIO()
    Image.fromarray(big).save(jpeg, format="JPEG")
    jpeg.seek(0)
    jpeg.name = "seven.jpg"
    api = client.post(
        f"/api/experiments/{experiment.pk}/classify/", {"image": jpeg}, HTTP_AUTHORIZATION=f"Token {token.key}"
    )
    assert api.status_code == 200, api.content
    assert api.json()["snapshot"] == 2
    assert [p["label"] for p in api.json()["predictions"]][0] == predictions[0].label

    not_an_image = io.BytesIO(b"%PDF-1.4 not a picture")
    not_an_image.name = "scan.png"
    refused = client.post(
        reverse("experiment-classify", args=[experiment.pk]), {"snapshot": snapshot.pk, "image": not_an_image}
    )
    assert refused.context["classification"] is None
    assert "not an image" in " ".join(refused.context["classify_form"].errors["image"])


def test_a_reconnecting_socket_gets_the_epochs_it_missed(client, alice):
    from tests.factories import make_experiment

    experiment = make_experiment(alice, status=Experiment.Status.RUNNING)
    EpochMetric.objects.create(
        experiment=experiment, epoch=2, train_loss=1.0, val_loss=0.9, val_accuracy=0.7, learning_rate=0.01
    )
    client.force_login(alice)

    async def reconnect():
        communicator = websocket(f"/ws/experiments/{experiment.pk}/", client)
        assert (await communicator.connect())[0]
        # The opening "sync": the group's sequence number the page counts from (jobs.events).
        assert (await communicator.receive_json_from(timeout=5))["type"] == "sync"
        await communicator.send_json_to({"after_epoch": 1})
        missed = await communicator.receive_json_from(timeout=5)
        status = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return missed, status

    missed, status = asyncio.run(reconnect())
    assert missed["epoch"] == 2 and missed["val_accuracy"] == pytest.approx(0.7)
    assert status["type"] == "status" and status["status"] == "running" and status["error"] == ""


@pytest.mark.parametrize("who", ["alice", "bob"])
def test_owner_and_team_member_may_open_the_socket(client, alice, bob, team, who):
    from tests.factories import make_experiment

    experiment = make_experiment(alice, visibility="team", team=team)
    client.force_login({"alice": alice, "bob": bob}[who])

    async def connect():
        communicator = websocket(f"/ws/experiments/{experiment.pk}/", client)
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return connected

    assert asyncio.run(connect())


@pytest.mark.parametrize("case", ["outsider", "anonymous", "other-site", "missing"])
def test_the_socket_is_closed_for_anyone_else(client, alice, charlie, team, case):
    from tests.factories import make_experiment

    experiment = make_experiment(alice, visibility="team", team=team)
    pk = experiment.pk + 1000 if case == "missing" else experiment.pk
    if case != "anonymous":
        client.force_login(alice if case in ("other-site", "missing") else charlie)
    origin = b"https://evil.example" if case == "other-site" else b"http://localhost"

    async def connect():
        communicator = websocket(f"/ws/experiments/{pk}/", client, origin=origin)
        connected, code = await communicator.connect()
        await communicator.disconnect()
        return connected, code

    connected, _ = asyncio.run(connect())
    assert not connected


def test_the_dataset_socket_follows_the_same_rule(client, alice, charlie):
    dataset = make_dataset(alice, status=Dataset.Status.RUNNING, progress_done=3, progress_total=9)

    async def connect():
        communicator = websocket(f"/ws/datasets/{dataset.pk}/", client)
        connected, _ = await communicator.connect()
        first = await communicator.receive_json_from(timeout=5) if connected else None
        await communicator.disconnect()
        return connected, first

    client.force_login(charlie)
    assert asyncio.run(connect()) == (False, None)
    client.force_login(alice)
    connected, first = asyncio.run(connect())
    assert connected
    assert (first["done"], first["total"]) == (3, 9)


def test_a_network_that_does_not_fit_the_images_is_refused_on_the_form(client, alice):
    tiny = make_dataset(alice, width=8, height=8, counts={"train": [40, 40], "val": [5, 5]})
    client.force_login(alice)
    response = client.post(reverse("experiment-new"), experiment_form(tiny))
    assert response.status_code == 200
    error = " ".join(response.context["form"].errors["network"])
    assert "8" in error and "at least" in error
    assert not Experiment.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"learning_rate": 0}, "learning_rates", "greater than 0"),
        ({"learning_rate": "nan"}, "learning_rates", "greater than 0"),
        ({"learning_rate": "0.1, fast"}, "learning_rates", "not a valid learning rate"),
        ({"batch_size": 500}, "batch_sizes", "training split"),
        ({"epochs": 0}, "epochs", "greater than or equal to 1"),
        ({"network": "custom", "network_spec": "layers: [type: conv"}, "network_spec", "line"),
        ({"network": "custom", "network_spec": "layers:\n  - type: teleport\n"}, "network_spec", "teleport"),
        (
            {"network": "custom", "network_spec": "layers:\n  - type: dense\n    features: 2\n"},
            "network_spec",
            "flatten",
        ),
        ({"queue": "training@nowhere/gpu7"}, "queue", "Select a valid choice"),
        ({"crop_size": 64}, None, "larger than the images"),
        ({"lr_policy": "step", "step_size": 0}, None, "Step size"),
    ],
)
def test_the_experiment_form_explains_bad_input(client, alice, overrides, field, message):
    dataset = make_dataset(alice)
    client.force_login(alice)
    response = client.post(reverse("experiment-new"), experiment_form(dataset, **overrides))
    assert response.status_code == 200
    errors = " ".join(response.context["form"].errors[field or "__all__"])
    assert errors and message in errors
    assert not Experiment.objects.exists()


def test_aborting_a_queued_experiment_means_no_worker_trains_it(client, alice, worker):
    dataset = make_dataset(alice)
    client.force_login(alice)
    client.post(reverse("experiment-new"), experiment_form(dataset, batch_size=4))
    experiment = Experiment.objects.get()
    client.post(reverse("experiment-abort", args=[experiment.pk]))

    worker("training")

    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.ABORTED
    assert experiment.started is None
    assert not experiment.metrics.exists()


def test_a_failed_training_says_why_on_the_page(client, alice, worker):
    # The dataset row says "done" but its files are gone: the job must fail, not hang.
    dataset = make_dataset(alice)
    client.force_login(alice)
    client.post(reverse("experiment-new"), experiment_form(dataset, batch_size=4))

    worker("training")

    experiment = Experiment.objects.get()
    assert experiment.status == Experiment.Status.FAILED
    assert experiment.error
    assert experiment.error in client.get(experiment.get_absolute_url()).content.decode()


def test_the_worker_parent_never_imports_jax(tmp_path):
    # RQ forks a work-horse per job; JAX started before the fork deadlocks it.
    code = (
        "import django, sys; django.setup();"
        "from django.core.management import load_command_class;"
        "load_command_class('django_rq', 'rqworker');"
        "import training.jobs, datasets.jobs;"
        "print('jax' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_fine_tuning_takes_the_weights_that_fit_and_starts_the_classifier_fresh(
    client, alice, mnist_dataset, mnist_root, settings, worker
):
    client.post(reverse("experiment-new"), experiment_form(mnist_dataset, epochs=1, name="digits"))
    worker("training")
    source = Experiment.objects.get()
    assert source.status == Experiment.Status.DONE, source.error

    # Three classes instead of ten: every layer fits but the last.
    three = settings.DATA_IMPORT_ROOTS[0] / "three-digits"
    for digit in "012":
        target = three / digit
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted((mnist_root / "train" / digit).glob("*.png"))[:40]:
            (target / path.name).write_bytes(path.read_bytes())
    client.post(
        reverse("dataset-new"),
        {"name": "three", "source_type": "folder", "source_folder": str(three), "channels": 1, "width": 28,
         "height": 28, "resize_mode": "squash", "val_percent": 25, "visibility": "private", "encoding": "raw"},
    )  # fmt: skip
    worker("datasets")
    small = Dataset.objects.get(name="three")
    assert small.status == Dataset.Status.DONE, small.error

    snapshot = source.snapshots.get()
    client.post(
        reverse("experiment-new"),
        experiment_form(small, name="fine-tuned", epochs=2, batch_size=16, pretrained=snapshot.pk,
                        early_stopping="val_loss", patience=1),
    )  # fmt: skip
    worker("training")

    tuned = Experiment.objects.get(name="fine-tuned")
    assert tuned.status == Experiment.Status.DONE, tuned.error
    log = " ".join(tuned.log_lines.values_list("message", flat=True))
    assert "Starting from the weights of digits" in log
    # The classifier (the last layer, ip2) had 10 outputs there and 3 here.
    assert "Not taken from the pretrained weights (new for this dataset): layers/6/bias, layers/6/kernel" in log
    assert tuned.metrics.last().val_accuracy > 0.5
