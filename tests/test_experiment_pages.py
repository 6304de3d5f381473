"""The experiment side's pages and endpoints: sweeps, Visualize, the learning-rate preview,
clone, snapshot downloads and the network library — and the visibility rule on each."""

import io
import json
import zipfile

import pytest
from django.urls import reverse

from accounts.models import Visibility
from models.models import SavedNetwork
from tests.factories import make_dataset, make_experiment, make_token
from training import recipes
from training.forms import data_with_defaults
from training.models import Experiment, Snapshot, Sweep


def form(dataset, **overrides):
    return data_with_defaults({"name": "digits", "dataset": dataset.pk, "epochs": 2, **overrides})


def test_several_learning_rates_and_batch_sizes_make_a_sweep(client, alice):
    dataset = make_dataset(alice)
    client.force_login(alice)
    response = client.post(reverse("experiment-new"), form(dataset, learning_rates="0.1, 0.01", batch_sizes="8,16"))

    sweep = Sweep.objects.get()
    assert response["Location"] == sweep.get_absolute_url()
    experiments = sweep.experiments.order_by("learning_rate", "batch_size")
    assert [(e.learning_rate, e.batch_size) for e in experiments] == [(0.01, 8), (0.01, 16), (0.1, 8), (0.1, 16)]
    assert all(e.status == Experiment.Status.QUEUED for e in experiments)
    page = client.get(sweep.get_absolute_url()).content.decode()
    assert all(e.name in page for e in experiments)


def test_a_sweep_page_is_for_those_who_may_see_it(client, alice, bob, charlie, team):
    sweep = Sweep.objects.create(name="lr sweep", owner=alice, team=team, visibility=Visibility.TEAM)
    make_experiment(alice, visibility=Visibility.TEAM, team=team, sweep=sweep)
    for user, status in ((alice, 200), (bob, 200), (charlie, 404)):
        client.force_login(user)
        assert client.get(sweep.get_absolute_url()).status_code == status, user


def test_options_reach_the_experiment_as_the_engine_takes_them(client, alice):
    # 200 images: 3 steps of 64 per epoch, so that half an epoch is at least one step.
    dataset = make_dataset(alice, width=32, height=32, counts={"train": [100, 100], "val": [10, 10]})
    client.force_login(alice)
    client.post(
        reverse("experiment-new"),
        form(dataset, solver="nesterov", lr_policy="multistep", multistep_values="40, 80", crop_size=28,
             flip="fliplr", early_stopping="val_loss", patience=3, val_interval=0.5, batch_accumulation=2),
    )  # fmt: skip
    experiment = Experiment.objects.get()
    assert experiment.solver == "nesterov"
    assert experiment.options["lr_policy"]["policy"] == "multistep"
    assert experiment.options["lr_policy"]["multistep_values"] == [40.0, 80.0]
    assert experiment.options["augmentation"]["crop_size"] == 28
    assert experiment.options["early_stopping"] == "val_loss"

    from training import config as training_config

    config = training_config.from_experiment(experiment)
    config.validate()
    assert (config.batch_accumulation, config.val_interval, config.augmentation.flip) == (2, 0.5, "fliplr")


def test_clone_fills_the_form_with_the_experiment(client, alice, bob, charlie, team):
    experiment = make_experiment(alice, visibility=Visibility.TEAM, team=team, solver="rmsprop", batch_size=16)
    client.force_login(bob)
    page = client.get(reverse("experiment-new") + f"?clone={experiment.pk}")
    initial = page.context["form"].initial
    assert (initial["solver"], initial["batch_sizes"]) == ("rmsprop", "16")
    client.force_login(charlie)
    assert client.get(reverse("experiment-new") + f"?clone={experiment.pk}").status_code == 404


def visualize(client, **payload):
    response = client.post(reverse("network-visualize"), json.dumps(payload), content_type="application/json")
    return response.status_code, response.json() if response.status_code == 200 else None


def test_visualize_describes_each_layer_and_pins_errors(client, alice):
    dataset = make_dataset(alice, classes=[str(i) for i in range(10)])
    client.force_login(alice)

    status, lenet = visualize(client, network="lenet", dataset=dataset.pk)
    assert status == 200 and lenet["error"] is None
    assert lenet["total_params"] == 431_080
    assert lenet["rows"][-1]["output_shape"] == [10]

    spec = "layers:\n  - {type: conv, features: 8, kernel: 3}\n  - {type: dense, features: 10}\n"
    status, broken = visualize(client, network="custom", spec=spec, dataset=dataset.pk)
    assert broken["error"]["layer"] == "layers[1]"
    assert "flat" in broken["error"]["message"]
    assert broken["rows"][0]["output_shape"] == [28, 28, 8]

    wrong_classes = spec.replace("- {type: dense", "- {type: flatten}\n  - {type: dense").replace("10}", "3}")
    assert "class" in visualize(client, network="custom", spec=wrong_classes, dataset=dataset.pk)[1]["error"]["message"]


def test_visualize_and_customize_refuse_what_the_user_cannot_see(client, alice, charlie):
    dataset = make_dataset(alice)
    experiment = make_experiment(alice)
    client.force_login(charlie)
    assert visualize(client, network="lenet", dataset=dataset.pk)[0] == 404
    assert client.get(reverse("network-spec") + f"?experiment={experiment.pk}").status_code == 404
    assert client.get(reverse("network-spec") + "?network=lenet").json()["spec"].count("type:") >= 5


def test_the_learning_rate_preview_follows_the_policy(client, alice):
    client.force_login(alice)
    url = reverse("lr-preview")
    points = client.get(url, {"learning_rates": "0.1", "epochs": 10, "lr_policy": "step", "step_size": 50,
                               "step_gamma": 0.1, "batch_sizes": 10}).json()["points"]  # fmt: skip
    assert points[0] == [0.0, pytest.approx(0.1)]
    assert points[-1][1] == pytest.approx(0.01)
    assert client.get(url, {"learning_rates": "0", "lr_policy": "fixed"}).status_code == 400


@pytest.fixture
def snapshot(alice, team, tmp_path):
    experiment = make_experiment(alice, visibility=Visibility.TEAM, team=team)
    path = tmp_path / "snapshot.ckpt"
    path.write_bytes(b"weights")
    return Snapshot.objects.create(experiment=experiment, epoch=2, path=str(path), val_loss=0.3, val_accuracy=0.9)


def test_a_snapshot_downloads_as_a_self_contained_archive(client, bob, snapshot):
    client.force_login(bob)
    response = client.get(reverse("snapshot-download", args=[snapshot.experiment_id, snapshot.pk]))
    assert response.status_code == 200
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert set(archive.namelist()) >= {"snapshot.ckpt", "network.yaml", "labels.txt", "preprocessing.json"}
    assert archive.read("snapshot.ckpt") == b"weights"
    assert archive.read("labels.txt").decode().split() == ["0", "1"]
    assert json.loads(archive.read("preprocessing.json"))["width"] == 28


def test_an_outsider_cannot_download_a_snapshot_or_see_hardware(client, charlie, snapshot):
    client.force_login(charlie)
    experiment_id = snapshot.experiment_id
    assert client.get(reverse("snapshot-download", args=[experiment_id, snapshot.pk])).status_code == 404
    assert client.get(reverse("experiment-hardware", args=[experiment_id])).status_code == 404
    assert client.post(reverse("experiment-resume", args=[experiment_id])).status_code == 404


def test_resume_is_for_those_who_may_change_it(client, alice, bob, snapshot):
    experiment = snapshot.experiment
    Experiment.objects.filter(pk=experiment.pk).update(status=Experiment.Status.ABORTED)
    client.force_login(bob)
    assert client.post(reverse("experiment-resume", args=[experiment.pk])).status_code == 403
    client.force_login(alice)
    client.post(reverse("experiment-resume", args=[experiment.pk]))
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.QUEUED


def test_the_network_library_follows_the_rule(client, alice, bob, charlie, team):
    client.force_login(alice)
    spec = "layers:\n  - {type: flatten}\n  - {type: dense}\n"
    response = client.post(
        reverse("network-list"), {"name": "tiny", "spec": spec, "visibility": "team", "team": team.pk},
        HTTP_ACCEPT="application/json",
    )  # fmt: skip
    saved = SavedNetwork.objects.get(pk=response.json()["id"])
    bad = client.post(reverse("network-list"), {"name": "bad", "spec": "layers: [", "visibility": "private"})
    assert "line" in " ".join(bad.context["form"].errors["spec"])

    client.force_login(bob)
    assert client.get(saved.get_absolute_url()).status_code == 200
    assert client.get(reverse("network-spec") + f"?saved={saved.pk}").json()["spec"] == spec.strip()
    assert client.post(reverse("network-delete", args=[saved.pk])).status_code == 403
    client.force_login(charlie)
    assert client.get(saved.get_absolute_url()).status_code == 404
    assert "tiny" not in client.get(reverse("network-list")).content.decode()


def test_the_api_creates_with_the_page_defaults_and_sweeps(client, alice):

    dataset = make_dataset(alice)
    token = make_token(alice)
    auth = {"HTTP_AUTHORIZATION": f"Token {token.key}"}
    single = client.post("/api/experiments/", {"name": "api", "dataset": dataset.pk, "learning_rate": 0.05},
                         content_type="application/json", **auth)  # fmt: skip
    assert single.status_code == 201, single.content
    assert single.json()["learning_rate"] == 0.05 and single.json()["solver"] == recipes.RECIPES["lenet"].solver
    sweep = client.post("/api/experiments/", {"name": "api", "dataset": dataset.pk, "learning_rate": [0.1, 0.01]},
                        content_type="application/json", **auth)  # fmt: skip
    assert sweep.status_code == 201
    assert len(sweep.json()["experiments"]) == 2
