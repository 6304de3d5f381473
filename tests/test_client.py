"""The command-line client, `python -m dlp`, against the real web tier and a real worker: log in
with a token, upload an archive of real handwritten digits, train on it while following the
experiment's WebSocket, download the snapshot, abort a run, and the refusals in plain words."""

import asyncio
import io
import json
import os
import stat
import subprocess
import sys
import zipfile
from datetime import timedelta

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone
from PIL import Image
from sklearn.datasets import load_digits

from accounts import tokens
from accounts.models import Visibility
from config.asgi import application
from tests.browser import platform_server  # noqa: F401 - a fixture
from tests.conftest import ROOT
from tests.dataset_fixtures import zip_of
from tests.factories import make_experiment
from training.models import Experiment, Snapshot

pytestmark = pytest.mark.django_db(transaction=True)

PER_CLASS = 12


@pytest.fixture
def dlp(tmp_path):
    """Runs the client as a user would, with a home folder of its own."""
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("DLP_")}
    env.pop("XDG_CONFIG_HOME", None)
    env["HOME"] = str(home)

    def run(*args, input=None, check=True, timeout=120):
        result = subprocess.run(
            [sys.executable, "-m", "dlp", *args],
            cwd=ROOT, env=env, input=input, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if check and result.returncode != 0:
            pytest.fail(f"dlp {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    run.home = home
    run.env = env
    return run


def digits_archive(path):
    """A zip of real handwritten digits (scikit-learn's 8x8 scans), one folder per class."""
    digits = load_digits()
    files, seen = {}, {}
    for image, label in zip(digits.images, digits.target, strict=True):
        index = seen.get(label, 0)
        if index == PER_CLASS:
            continue
        seen[label] = index + 1
        buffer = io.BytesIO()
        Image.fromarray((image * 15).astype(np.uint8)).resize((28, 28)).save(buffer, "PNG")
        files[f"digits/{label}/{index}.png"] = buffer.getvalue()
    path.write_bytes(zip_of(files))
    return path


def logged_in(dlp, url, user, **options):
    _, secret = tokens.create(user, "cli", **options)
    dlp("login", url, "--token-stdin", input=secret + "\n")
    return secret


def test_a_dataset_is_uploaded_trained_on_followed_and_downloaded(platform_server, dlp, alice, tmp_path):  # noqa: F811
    logged_in(dlp, platform_server, alice)
    config = dlp.home / ".config" / "dlp" / "config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text())["url"] == platform_server + "/"

    # An upload, read from disk in chunks with a true progress bar, then built by the worker.
    archive = digits_archive(tmp_path / "digits.zip")
    made = dlp("datasets", "create", "digits", "--archive", str(archive), "--val-percent", "25", "--wait", "--json")
    assert "uploading [" in made.stderr and "100%" in made.stderr
    dataset = json.loads(made.stdout)
    assert dataset["status"] == "done", dataset["error"]
    assert dataset["classes"] == [str(d) for d in range(10)]
    assert sum(map(sum, dataset["counts"].values())) == 10 * PER_CLASS
    listed = dlp("datasets", "list").stdout
    assert "digits" in listed and "done" in listed and "ID" in listed

    # Created and followed in one command: epoch lines arrive live, then the final metrics.
    followed = dlp(
        "experiments", "create", "lenet-once", "--dataset", str(dataset["id"]), "--epochs", "2",
        "--batch-size", "16", "--learning-rate", "0.01", "--follow", timeout=180,
    ).stdout.splitlines()  # fmt: skip
    epochs = [line for line in followed if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1", "2"]
    assert "val accuracy" in epochs[-1]
    final = followed.index(next(line for line in followed if line.startswith("Done.")))
    assert final > followed.index(epochs[-1])
    assert "Final (epoch 2): val loss" in followed[final]
    experiment = Experiment.objects.get(name="lenet-once")
    assert experiment.status == Experiment.Status.DONE

    shown = dlp("experiments", "show", str(experiment.pk)).stdout
    assert "lenet-once" in shown and "VAL ACCURACY" in shown

    # The newest snapshot, saved under the name the server gives it.
    out = tmp_path / "out"
    out.mkdir()
    downloaded = json.loads(dlp("experiments", "download", str(experiment.pk), "-o", str(out), "--json").stdout)
    assert downloaded["path"].endswith("lenet-once-epoch-2.zip") and downloaded["bytes"] > 1000
    assert (out / "lenet-once-epoch-2.zip").read_bytes()[:2] == b"PK"

    # A long run, followed (with a read-only token: following only reads) until an epoch has
    # ended, then aborted from another command.
    _, read_only = tokens.create(alice, "watch", read_only=True)
    long_run = json.loads(
        dlp("experiments", "create", "lenet-long", "--dataset", str(dataset["id"]), "--epochs", "1000",
            "--batch-size", "16", "--json").stdout
    )  # fmt: skip
    follow = subprocess.Popen(
        [sys.executable, "-m", "dlp", "experiments", "follow", str(long_run["id"])],
        cwd=ROOT, env={**dlp.env, "DLP_TOKEN": read_only}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = follow.stdout.readline()
        while line and not line.startswith("epoch "):
            line = follow.stdout.readline()
        assert line.startswith("epoch "), follow.stderr.read()
        # Printed while it still trains: live, not read back once it ended.
        assert Experiment.objects.get(pk=long_run["id"]).status == Experiment.Status.RUNNING
        aborted = dlp("experiments", "abort", str(long_run["id"]), check=False)
        assert "stops after its current step" in aborted.stdout, (
            aborted.stderr,
            Experiment.objects.get(pk=long_run["id"]).error,
        )
        rest, _ = follow.communicate(timeout=60)
    finally:
        follow.kill()
        follow.wait()
    assert follow.returncode == 1  # it did not finish
    assert rest.splitlines()[-1].startswith("Aborted.")
    assert Experiment.objects.get(pk=long_run["id"]).status == Experiment.Status.ABORTED


def test_refusals_are_plain_words_and_a_failing_exit(platform_server, dlp, alice, bob):  # noqa: F811
    bad_login = dlp("login", platform_server, "--token-stdin", input="not-a-token\n", check=False)
    assert bad_login.returncode == 1
    assert bad_login.stderr.strip() == "dlp: Invalid token."
    not_yet = dlp("datasets", "list", check=False)
    assert not_yet.returncode == 1 and "run `dlp login URL` first" in not_yet.stderr

    logged_in(dlp, platform_server, alice)
    bad = dlp("experiments", "create", "x", "--dataset", "999", "--epochs", "0", "--set", "solvr=adam", check=False)
    assert bad.returncode == 1
    assert "solvr: Not a field here. Did you mean solver?" in bad.stderr
    assert "{" not in bad.stderr  # words, not the JSON body
    missing = dlp("experiments", "show", "999", check=False)
    assert missing.returncode == 1 and missing.stderr.startswith("dlp: ") and "Traceback" not in missing.stderr
    no_file = dlp("datasets", "create", "x", "--archive", "/nonexistent.zip", check=False)
    assert no_file.returncode == 1 and "No file /nonexistent.zip." in no_file.stderr

    # A read-only token reads but creates nothing.
    logged_in(dlp, platform_server, bob, read_only=True)
    assert dlp("datasets", "list").stdout.strip() == "No datasets."
    refused = dlp("datasets", "create", "x", "--folder", "mnist/train", check=False)
    assert refused.returncode == 1
    assert "This API token is read-only" in refused.stderr
    refused_socket = dlp("experiments", "follow", "999", check=False)
    assert refused_socket.returncode == 1 and "No experiment matches the given query." in refused_socket.stderr


# --- What the server does for the client ------------------------------------------------------


def token_socket(path, secret):
    headers = [
        (b"host", b"localhost"),
        (b"origin", b"http://localhost"),
        (b"authorization", f"Token {secret}".encode()),
    ]
    return WebsocketCommunicator(application, path, headers=headers)


def test_a_token_opens_the_socket_of_what_its_user_may_see(alice, bob, charlie, team):
    experiment = make_experiment(alice, visibility=Visibility.TEAM, team=team, status=Experiment.Status.RUNNING)
    path = f"/ws/experiments/{experiment.pk}/"
    _, read_only = tokens.create(bob, "watch", read_only=True)
    _, outsider = tokens.create(charlie, "nosy")
    _, expired = tokens.create(alice, "old", expires=timezone.now() - timedelta(days=1))

    async def follow():
        watcher = token_socket(path, read_only)
        connected, _ = await watcher.connect()
        assert connected
        await watcher.send_json_to({"after_epoch": -1})
        events = [await watcher.receive_json_from()]
        while events[-1]["type"] != "status":  # the epochs and exports it missed come first
            events.append(await watcher.receive_json_from())
        assert events[-1]["status"] == "running"
        await watcher.disconnect()
        for secret in (outsider, expired, "not-a-token", ""):
            refused = token_socket(path, secret)
            connected, _ = await refused.connect()
            assert not connected, secret
            await refused.disconnect()

    asyncio.run(follow())


def test_revoking_the_token_closes_its_socket(alice):
    experiment = make_experiment(alice, status=Experiment.Status.RUNNING)
    token, secret = tokens.create(alice, "follow", read_only=True)

    async def follow():
        watcher = token_socket(f"/ws/experiments/{experiment.pk}/", secret)
        connected, _ = await watcher.connect()
        assert connected
        await sync_to_async(tokens.revoke)(token, user=alice)
        while True:  # what the socket sent on opening, then the close
            message = await watcher.receive_output(timeout=5)
            if message["type"] == "websocket.close":
                break
        assert message["code"] == 4403

    asyncio.run(follow())


@pytest.fixture
def snapshot(alice, team, tmp_path):
    experiment = make_experiment(alice, name="Digits run", visibility=Visibility.TEAM, team=team)
    path = tmp_path / "snapshot.ckpt"
    path.write_bytes(b"weights")
    return Snapshot.objects.create(experiment=experiment, epoch=2, path=str(path), val_loss=0.3, val_accuracy=0.9)


def test_the_api_downloads_a_snapshot_for_those_who_may_see_it(snapshot, bob, charlie):
    def get(user, epoch="2"):
        api = Client(HTTP_AUTHORIZATION=f"Token {tokens.create(user, 'api', read_only=True)[1]}")
        return api.get(f"/api/experiments/{snapshot.experiment_id}/snapshots/{epoch}/download/")

    response = get(bob)
    assert response.status_code == 200
    assert response["Content-Disposition"] == 'attachment; filename="digits-run-epoch-2.zip"'
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert archive.read("snapshot.ckpt") == b"weights"
    assert get(charlie).status_code == 404
    assert get(bob, "3").status_code == 404
    wrong = get(bob, "two")
    assert wrong.status_code == 404 and wrong.json()["detail"] == "Give the snapshot's epoch as a number."
