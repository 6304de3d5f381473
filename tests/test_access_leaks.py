"""Sharing cannot leak: an open socket loses what its user lost, nothing made from an object
is shared more widely than the object, no page or download names what its viewer may not
see, and only this site's own pages open sockets.

alice is an admin of team Vision and owns things; bob is a plain member of Vision; charlie
is in another team; root is a superuser.
"""

import asyncio
import io
import json
import zipfile

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import reverse
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from accounts.models import Membership, Team, User, Visibility
from config.asgi import application
from datasets.models import Dataset
from jobs.events import CLOSE_ACCESS_LOST, GroupConsumer
from tests.browser import browser_page, log_in, platform_server, shot  # noqa: F401 - platform_server is a fixture
from tests.dataset_fixtures import color_folder, fresh_folder  # noqa: F401 - fixtures
from tests.factories import make_dataset, make_experiment, make_token
from training.forms import data_with_defaults
from training.models import Experiment, Snapshot

# The rule's promise: a socket whose user lost access closes within this many seconds.
ACCESS_DEADLINE = 5


@pytest.fixture
def root(db):
    return User.objects.create_superuser("root", password="root-password")


def api(user):
    client = Client()
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {make_token(user).key}"
    return client


def logged_in(user):
    client = Client()
    client.force_login(user)
    return client


# --- 1. An open socket keeps asking -------------------------------------------------------------


def socket(user, path, origin=b"http://localhost", host=b"localhost", extra=()):
    cookie = f"sessionid={logged_in(user).cookies['sessionid'].value}".encode()
    headers = [(b"host", host), (b"cookie", cookie), *extra] + ([(b"origin", origin)] if origin is not None else [])
    return WebsocketCommunicator(application, path, headers=headers)


async def opened(communicator):
    """Connect, and read what the consumer sends on opening, so that what comes next is new."""
    connected, code = await communicator.connect()
    assert connected, code
    while not await communicator.receive_nothing(timeout=0.3):
        await communicator.receive_output()
    return communicator


async def closed_for_lost_access(communicator):
    message = await communicator.receive_output(timeout=ACCESS_DEADLINE)
    assert message == {"type": "websocket.close", "code": CLOSE_ACCESS_LOST}, message


async def nothing_more(communicator, group):
    """Neither a forwarded event nor the history is sent any more."""
    await get_channel_layer().group_send(group, {"type": "forward", "event": {"type": "log", "message": "later"}})
    await communicator.send_json_to({"after_epoch": 0})
    assert await communicator.receive_nothing(timeout=1)
    await communicator.disconnect()


def make_private_in_the_orm(obj):
    obj.visibility = Visibility.PRIVATE
    obj.save()  # what the admin's change form does


def take_access_away(change, obj, owner, watcher):
    """Each way access goes: the settings page, the API, a save() as in the admin, a team
    membership deleted in the admin, the account deactivated or its superuser flag taken."""
    if change == "settings page":
        name = "experiment-settings" if isinstance(obj, Experiment) else "dataset-settings"
        response = logged_in(owner).post(reverse(name, args=[obj.pk]), {"name": obj.name, "visibility": "private"})
        assert response.status_code == 302
    elif change == "API":
        response = api(owner).patch(f"/api/experiments/{obj.pk}/", {"visibility": "private"}, "application/json")
        assert response.status_code == 200, response.content
    elif change == "save()":
        make_private_in_the_orm(obj)
    elif change == "removed in the admin":
        superuser = User.objects.create_superuser("admin", password="admin-password")
        membership = Membership.objects.get(user=watcher, team__name="Vision")
        delete = reverse("admin:accounts_membership_delete", args=[membership.pk])
        assert logged_in(superuser).post(delete, {"post": "yes"}).status_code == 302
        assert not Membership.objects.filter(pk=membership.pk).exists()
    elif change == "deactivated":
        watcher.is_active = False
        watcher.save()
    else:
        assert change == "no longer a superuser"
        watcher.is_superuser = False
        watcher.save()


EXPERIMENT_CASES = {
    # case: (owner, watcher, visibility, the change)
    "outsider, made private on the settings page": ("alice", "charlie", "organisation", "settings page"),
    "outsider, made private through the API": ("alice", "charlie", "organisation", "API"),
    "member, made private by a save() as in the admin": ("alice", "bob", "team", "save()"),
    "member, removed from the team in the admin": ("alice", "bob", "team", "removed in the admin"),
    "team admin, removed from the team in the admin": ("bob", "alice", "team", "removed in the admin"),
    "member, deactivated": ("alice", "bob", "team", "deactivated"),
    "superuser, no longer one": ("alice", "root", "private", "no longer a superuser"),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", EXPERIMENT_CASES)
def test_an_experiment_socket_closes_when_access_is_removed(case, alice, bob, charlie, root, team):
    cast = {"alice": alice, "bob": bob, "charlie": charlie, "root": root}
    owner, watcher, visibility, change = EXPERIMENT_CASES[case]
    owner, watcher = cast[owner], cast[watcher]
    experiment = make_experiment(owner, visibility=visibility, team=team, status=Experiment.Status.RUNNING)
    communicator = socket(watcher, f"/ws/experiments/{experiment.pk}/")

    async def watch():
        await opened(communicator)
        await sync_to_async(take_access_away)(change, experiment, owner, watcher)
        await closed_for_lost_access(communicator)
        await nothing_more(communicator, experiment.group_name)

    asyncio.run(watch())


DATASET_CASES = {
    "outsider, made private on the settings page": ("charlie", "organisation", "settings page"),
    "member, made private by a save() as in the admin": ("bob", "team", "save()"),
    "member, removed from the team in the admin": ("bob", "team", "removed in the admin"),
    "outsider, deactivated": ("charlie", "organisation", "deactivated"),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("case", DATASET_CASES)
def test_a_dataset_socket_closes_when_access_is_removed(case, alice, bob, charlie, team):
    watcher, visibility, change = DATASET_CASES[case]
    watcher = {"bob": bob, "charlie": charlie}[watcher]
    dataset = make_dataset(alice, visibility=visibility, team=team, status=Dataset.Status.RUNNING)
    communicator = socket(watcher, f"/ws/datasets/{dataset.pk}/")

    async def watch():
        await opened(communicator)
        await sync_to_async(take_access_away)(change, dataset, alice, watcher)
        await closed_for_lost_access(communicator)
        await nothing_more(communicator, dataset.group_name)

    asyncio.run(watch())


@pytest.mark.django_db(transaction=True)
def test_an_event_is_not_forwarded_once_access_is_gone_even_between_checks(alice, bob, team, monkeypatch):
    monkeypatch.setattr(GroupConsumer, "access_check_seconds", 600)  # only the event itself can notice
    experiment = make_experiment(alice, visibility=Visibility.TEAM, team=team, status=Experiment.Status.RUNNING)
    communicator = socket(bob, f"/ws/experiments/{experiment.pk}/")
    epoch = {"type": "epoch", "epoch": 2, "train_loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.8}

    async def watch():
        await opened(communicator)
        await sync_to_async(make_private_in_the_orm)(experiment)
        await get_channel_layer().group_send(experiment.group_name, {"type": "forward", "event": epoch})
        await closed_for_lost_access(communicator)
        await nothing_more(communicator, experiment.group_name)

    asyncio.run(watch())


@pytest.mark.django_db(transaction=True)
def test_the_owner_keeps_watching_after_making_it_private(alice, team):
    experiment = make_experiment(alice, visibility=Visibility.ORGANISATION, status=Experiment.Status.RUNNING)
    communicator = socket(alice, f"/ws/experiments/{experiment.pk}/")
    event = {"type": "log", "message": "still here"}

    async def watch():
        await opened(communicator)
        await sync_to_async(take_access_away)("settings page", experiment, alice, alice)
        await get_channel_layer().group_send(experiment.group_name, {"type": "forward", "event": event})
        assert await communicator.receive_json_from(timeout=ACCESS_DEADLINE) == event
        # Past an access check: still open.
        assert await communicator.receive_nothing(timeout=GroupConsumer.access_check_seconds + 1)
        await communicator.disconnect()

    asyncio.run(watch())


@pytest.mark.django_db(transaction=True)
def test_a_message_that_is_not_a_json_object_is_answered_not_fatal(alice):
    experiment = make_experiment(alice)
    communicator = socket(alice, f"/ws/experiments/{experiment.pk}/")

    async def talk():
        await opened(communicator)
        answers = []
        for text in ("[1, 2]", '"after_epoch"', "3", "null", "not json"):
            await communicator.send_to(text_data=text)
            answers.append(await communicator.receive_json_from(timeout=5))
        await communicator.send_to(bytes_data=b"\x00\x01")
        answers.append(await communicator.receive_json_from(timeout=5))
        await communicator.send_json_to({"after_epoch": True})  # not a number: ignored
        await communicator.send_json_to({"after_epoch": 0})
        history = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return answers, history

    answers, history = asyncio.run(talk())
    assert [answer["type"] for answer in answers] == ["error"] * 6
    assert "JSON objects" in answers[0]["error"]
    assert history["type"] == "epoch" and history["epoch"] == 1


# --- 3. Only this site's pages open sockets ------------------------------------------------------


ORIGINS = {
    # case: (Origin, Host, more headers), all against a server on port 8000 unless said
    "same origin": (b"http://localhost:8000", b"localhost:8000", ()),
    "another port": (b"http://localhost:9999", b"localhost:8000", ()),
    "another port by address": (b"http://127.0.0.1:9999", b"127.0.0.1:8000", ()),
    "another scheme": (b"https://localhost:8000", b"localhost:8000", ()),
    "default port written or not": (b"http://localhost", b"localhost:80", ()),
    "another site": (b"https://evil.example", b"localhost:8000", ()),
    "a host not allowed (DNS rebinding)": (b"http://evil.example:8000", b"evil.example:8000", ()),
    "no origin": (None, b"localhost:8000", ()),
    "an opaque origin": (b"null", b"localhost:8000", ()),
    "a trusted origin": (b"https://platform.example.org", b"internal:8000", ()),
    "a trusted subdomain": (b"https://team.example.net", b"localhost:8000", ()),
    "a trusted subdomain, other scheme": (b"http://team.example.net", b"localhost:8000", ()),
    "https at a trusted proxy": (b"https://localhost", b"localhost", ((b"x-forwarded-proto", b"https"),)),
}
ACCEPTED = {"same origin", "default port written or not", "a trusted origin", "a trusted subdomain",
            "https at a trusted proxy"}  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_only_this_sites_own_origin_or_a_trusted_one_opens_a_socket(alice, settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://platform.example.org", "https://*.example.net"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    experiment = make_experiment(alice)

    async def opens(communicator):
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return connected

    path = f"/ws/experiments/{experiment.pk}/"
    opened_for = {
        case: asyncio.run(opens(socket(alice, path, origin=origin, host=host, extra=extra)))
        for case, (origin, host, extra) in ORIGINS.items()
    }
    assert {case for case, connected in opened_for.items() if connected} == ACCEPTED


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_real_server_refuses_another_port_and_takes_its_own(platform_server, alice):  # noqa: F811
    experiment = make_experiment(alice)
    cookie = f"sessionid={logged_in(alice).cookies['sessionid'].value}"
    port = platform_server.rsplit(":", 1)[1]
    url = f"ws://localhost:{port}/ws/experiments/{experiment.pk}/"
    for origin in ("http://127.0.0.1:9999", f"http://localhost:{int(port) + 1}", f"https://localhost:{port}"):
        with pytest.raises(InvalidStatus) as refused:
            connect(url, origin=origin, additional_headers={"Cookie": cookie}, open_timeout=10)
        assert refused.value.response.status_code == 403, origin
    with connect(url, origin=platform_server, additional_headers={"Cookie": cookie}, open_timeout=10) as ws:
        ws.send(json.dumps({"after_epoch": 0}))
        # The opening "sync" (jobs.events) comes first; then the refill.
        event = json.loads(ws.recv(timeout=10))
        for _ in range(20):
            if event["type"] == "epoch":
                break
            event = json.loads(ws.recv(timeout=10))
        assert event["epoch"] == 1


# --- 2. Nothing made from an object is shared more widely than it --------------------------------


@pytest.fixture
def team_dataset(alice, team, color_folder):  # noqa: F811
    folder = str(color_folder)
    return make_dataset(alice, name="vision faces", visibility=Visibility.TEAM, team=team, source_folder=folder)


def clone_form(source, **overrides):
    return {"name": "faces again", "source_type": "folder", "source_folder": source.source_folder,
            "clone_of": source.pk, "channels": 1, "width": 16, "height": 16, "resize_mode": "squash",
            "val_percent": 0, **overrides}  # fmt: skip


TEAM_ONLY = "Dataset “vision faces” is shared with team Vision only, so {what} cannot be shared more widely."


def test_a_member_cannot_clone_a_team_dataset_for_the_organisation(client, bob, charlie, team, team_dataset):
    client.force_login(bob)
    page = client.get(reverse("dataset-clone", args=[team_dataset.pk])).content.decode()
    assert 'value="team"' in page and 'value="organisation"' not in page  # not offered

    response = client.post(reverse("dataset-clone", args=[team_dataset.pk]), clone_form(team_dataset,
                           visibility="organisation", team=team.pk))  # fmt: skip
    assert response.status_code == 200
    assert response.context["form"].errors["visibility"] == [TEAM_ONLY.format(what="a clone of it")]
    refused = api(bob).post("/api/datasets/", clone_form(team_dataset, visibility="organisation"),
                            content_type="application/json")  # fmt: skip
    assert refused.status_code == 400
    assert refused.json()["errors"]["visibility"][0] == TEAM_ONLY.format(what="a clone of it")
    assert list(Dataset.objects.all()) == [team_dataset]
    assert api(charlie).get("/api/datasets/").json()["results"] == []

    # Shared with the team it came from, the clone is made.
    allowed = client.post(reverse("dataset-clone", args=[team_dataset.pk]), clone_form(team_dataset,
                          visibility="team", team=team.pk))  # fmt: skip
    assert allowed.status_code == 302, allowed.context["form"].errors
    assert Dataset.objects.get(name="faces again").visibility == Visibility.TEAM


def experiment_form(dataset, **overrides):
    return data_with_defaults({"name": "on faces", "dataset": dataset.pk, "epochs": 1, "batch_size": 4, **overrides})


def test_a_member_cannot_share_an_experiment_on_a_team_dataset_with_the_organisation(client, bob, charlie, team):
    dataset = make_dataset(bob, name="vision faces", visibility=Visibility.TEAM, team=team)
    client.force_login(bob)
    response = client.post(reverse("experiment-new"), experiment_form(dataset, visibility="organisation"))
    assert response.status_code == 200
    assert response.context["form"].errors["visibility"] == [TEAM_ONLY.format(what="an experiment on it")]
    body = {"name": "on faces", "dataset": dataset.pk, "epochs": 1, "batch_size": 4, "visibility": "organisation"}
    refused = api(bob).post("/api/experiments/", body, content_type="application/json")
    assert refused.status_code == 400
    assert refused.json()["errors"]["visibility"][0] == TEAM_ONLY.format(what="an experiment on it")
    assert not Experiment.objects.exists()
    assert "vision faces" not in logged_in(charlie).get(reverse("console")).content.decode()

    allowed = client.post(reverse("experiment-new"), experiment_form(dataset, visibility="team", team=team.pk))
    assert allowed.status_code == 302
    assert Experiment.objects.get().visibility == Visibility.TEAM


def test_the_form_tells_its_script_what_each_dataset_allows(client, bob, team):
    dataset = make_dataset(bob, name="vision faces", visibility=Visibility.TEAM, team=team)
    client.force_login(bob)
    sharing = client.get(reverse("experiment-new")).context["sharing"]
    assert sharing["datasets"] == {dataset.pk: ["team", team.pk]}


def test_an_experiment_on_a_private_dataset_stays_private(client, alice, team):
    dataset = make_dataset(alice, name="my faces")
    client.force_login(alice)
    response = client.post(reverse("experiment-new"), experiment_form(dataset, visibility="team", team=team.pk))
    message = "Dataset “my faces” is private, so an experiment on it cannot be shared more widely."
    assert response.context["form"].errors["visibility"] == [message]


def test_a_team_dataset_allows_no_other_team_an_organisation_one_any(client, alice, team):
    other = Team.objects.create(name="Audio")
    Membership.objects.create(user=alice, team=other)
    dataset = make_dataset(alice, name="vision faces", visibility=Visibility.TEAM, team=team)
    client.force_login(alice)
    response = client.post(reverse("experiment-new"), experiment_form(dataset, visibility="team", team=other.pk))
    assert response.context["form"].errors["visibility"] == [TEAM_ONLY.format(what="an experiment on it")]
    dataset.visibility = Visibility.ORGANISATION
    dataset.save()
    response = client.post(reverse("experiment-new"), experiment_form(dataset, visibility="team", team=other.pk))
    assert response.status_code == 302


def test_a_fine_tune_is_shared_no_wider_than_the_snapshot_it_starts_from(client, alice, bob, team, tmp_path):
    source = make_experiment(alice, name="vision lenet", visibility=Visibility.TEAM, team=team)
    snapshot = Snapshot.objects.create(experiment=source, epoch=1, path=str(tmp_path / "s.ckpt"))
    dataset = make_dataset(bob, name="public digits", visibility=Visibility.ORGANISATION)
    client.force_login(bob)
    response = client.post(
        reverse("experiment-new"), experiment_form(dataset, pretrained=snapshot.pk, visibility="organisation")
    )
    message = "Experiment “vision lenet” is shared with team Vision only, so a fine-tune of its snapshots cannot be "
    assert response.context["form"].errors["visibility"] == [message + "shared more widely."]
    assert client.get(reverse("experiment-new")).context["sharing"]["snapshots"] == {snapshot.pk: ["team", team.pk]}


def test_a_dataset_cannot_be_narrowed_below_what_was_made_from_it(client, alice, bob, charlie, team):
    dataset = make_dataset(alice, name="faces", visibility=Visibility.ORGANISATION)
    make_experiment(alice, dataset, name="everyone's lenet", visibility=Visibility.ORGANISATION)
    make_experiment(bob, dataset, name="bob's run", visibility=Visibility.TEAM, team=team)
    audio = charlie.memberships.get().team
    make_experiment(charlie, dataset, name="audio run", visibility=Visibility.TEAM, team=audio)
    client.force_login(alice)
    url = reverse("dataset-settings", args=[dataset.pk])

    response = client.post(url, {"name": "faces", "visibility": "team", "team": team.pk})
    # Named if alice may see it, counted if not; bob's run is Vision's, which stays allowed.
    assert response.context["settings_form"].errors["visibility"] == [
        "What was made from it is shared more widely than that (experiment “everyone's lenet”, 1 you cannot see); "
        "narrow or delete those first."
    ]
    dataset.refresh_from_db()
    assert dataset.visibility == Visibility.ORGANISATION
    # Renaming is not narrowing.
    assert client.post(url, {"name": "faces v2", "visibility": "organisation"}).status_code == 302


def test_a_dataset_cannot_be_narrowed_below_its_clones(client, alice, bob, team):
    dataset = make_dataset(alice, name="faces", visibility=Visibility.TEAM, team=team)
    make_dataset(bob, name="bob's clone", visibility=Visibility.TEAM, team=team, cloned_from=dataset)
    client.force_login(alice)
    response = client.post(reverse("dataset-settings", args=[dataset.pk]), {"name": "faces", "visibility": "private"})
    assert response.context["settings_form"].errors["visibility"] == [
        "What was made from it is shared more widely than that (dataset “bob's clone”); narrow or delete those first."
    ]


# --- 2. Old rows that break the rule show nothing of what their viewer may not see ----------------


@pytest.fixture
def leaky(alice, team, tmp_path):
    """An organisation-wide experiment on a private dataset, fine-tuned from a private
    experiment: rows made before the rule, or by the admin."""
    dataset = make_dataset(alice, name="secret faces", classes=["zorro", "yeti"])
    dataset.directory.mkdir(parents=True, exist_ok=True)
    np.save(dataset.directory / "mean.npy", np.zeros((28, 28, 1), np.float32))
    source = make_experiment(alice, dataset, name="secret source")
    source_snapshot = Snapshot.objects.create(experiment=source, epoch=1, path=str(tmp_path / "source.ckpt"))
    experiment = make_experiment(
        alice, dataset, name="public lenet", visibility=Visibility.ORGANISATION, pretrained=source_snapshot
    )
    (tmp_path / "public.ckpt").write_bytes(b"weights")
    snapshot = Snapshot.objects.create(experiment=experiment, epoch=2, path=str(tmp_path / "public.ckpt"))
    return experiment, snapshot


def test_the_console_and_the_experiment_page_do_not_name_a_hidden_dataset(client, alice, charlie, leaky):
    experiment, _ = leaky
    client.force_login(charlie)
    for url in (reverse("console"), experiment.get_absolute_url()):
        page = client.get(url).content.decode()
        assert "public lenet" in page, url
        assert "secret faces" not in page and "a dataset you cannot see" in page, url
        assert "secret source" not in page, url
    assert "fine-tuned from an experiment you cannot see" in client.get(experiment.get_absolute_url()).content.decode()
    # Its owner sees them all.
    client.force_login(alice)
    page = client.get(experiment.get_absolute_url()).content.decode()
    assert "secret faces" in page and "secret source" in page
    assert "secret faces" in client.get(reverse("console")).content.decode()


def test_the_api_does_not_reveal_a_hidden_dataset(charlie, alice, leaky):
    experiment, _ = leaky
    listed = api(charlie).get("/api/experiments/")
    detail = api(charlie).get(f"/api/experiments/{experiment.pk}/")
    assert [e["dataset"] for e in listed.json()["results"]] == [None]
    assert detail.json()["dataset"] is None
    for body in (listed.content, detail.content):
        assert b"secret" not in body
    assert api(alice).get(f"/api/experiments/{experiment.pk}/").json()["dataset"] == experiment.dataset_id


def test_a_clone_of_a_hidden_dataset_does_not_name_it_in_the_api(charlie, alice):
    original = make_dataset(alice, name="secret faces")
    clone = make_dataset(charlie, name="charlie's faces", cloned_from=original)
    assert api(charlie).get(f"/api/datasets/{clone.pk}/").json()["cloned_from"] is None
    assert api(charlie).get("/api/datasets/").json()["results"][0]["cloned_from"] is None


def test_the_snapshot_download_leaves_out_a_hidden_dataset(client, alice, charlie, leaky):
    experiment, snapshot = leaky
    url = reverse("snapshot-download", args=[experiment.pk, snapshot.pk])

    def archive_for(user):
        client.force_login(user)
        response = client.get(url)
        assert response.status_code == 200
        return zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))

    outsider = archive_for(charlie)
    assert "labels.txt" not in outsider.namelist() and "mean.npy" not in outsider.namelist()
    assert json.loads(outsider.read("info.json"))["dataset"] is None
    assert all(b"secret" not in outsider.read(name) and b"zorro" not in outsider.read(name)
               for name in outsider.namelist())  # fmt: skip
    owner = archive_for(alice)
    assert {"labels.txt", "mean.npy"} <= set(owner.namelist())
    assert owner.read("labels.txt").decode().split() == ["zorro", "yeti"]


# --- 4. An experiment's settings ---------------------------------------------------------------------


@pytest.fixture
def bobs_experiment(bob, team):
    dataset = make_dataset(bob, name="vision faces", visibility=Visibility.ORGANISATION)
    return make_experiment(bob, dataset, name="bob lenet", visibility=Visibility.TEAM, team=team)


@pytest.mark.parametrize("who", ["owner", "team admin", "superuser"])
def test_owner_team_admin_and_superuser_change_an_experiments_settings(client, who, alice, bob, root, bobs_experiment):
    user = {"owner": bob, "team admin": alice, "superuser": root}[who]
    client.force_login(user)
    url = reverse("experiment-settings", args=[bobs_experiment.pk])
    page = client.get(url)
    assert page.status_code == 200
    assert url in client.get(bobs_experiment.get_absolute_url()).content.decode()  # linked from the page
    response = client.post(url, {"name": "renamed", "visibility": "organisation", "team": ""})
    assert response.status_code == 302
    bobs_experiment.refresh_from_db()
    assert (bobs_experiment.name, bobs_experiment.visibility, bobs_experiment.owner) == ("renamed", "organisation", bob)


def test_a_member_may_not_and_an_outsider_does_not_see_them(client, alice, bob, charlie, team):
    experiment = make_experiment(alice, name="alice lenet", visibility=Visibility.TEAM, team=team)
    url = reverse("experiment-settings", args=[experiment.pk])
    for user, status in ((bob, 403), (charlie, 404)):
        client.force_login(user)
        assert client.get(url).status_code == status, user
        assert client.post(url, {"name": "mine", "visibility": "organisation"}).status_code == status, user
    client.force_login(bob)
    assert url not in client.get(experiment.get_absolute_url()).content.decode()
    experiment.refresh_from_db()
    assert (experiment.name, experiment.visibility) == ("alice lenet", "team")


def test_the_settings_offer_no_more_than_the_dataset_allows(client, alice, team):
    dataset = make_dataset(alice, name="vision faces", visibility=Visibility.TEAM, team=team)
    experiment = make_experiment(alice, dataset, visibility=Visibility.TEAM, team=team)
    Team.objects.create(name="Audio").memberships.create(user=alice)
    client.force_login(alice)
    url = reverse("experiment-settings", args=[experiment.pk])
    page = client.get(url).content.decode()
    assert 'value="organisation"' not in page and ">Audio<" not in page
    response = client.post(url, {"name": "x", "visibility": "organisation"})
    assert response.context["form"].errors["visibility"] == [TEAM_ONLY.format(what="an experiment on it")]


def test_an_experiment_cannot_be_narrowed_below_its_fine_tunes(client, alice, team, tmp_path):
    source = make_experiment(alice, name="base", visibility=Visibility.ORGANISATION)
    snapshot = Snapshot.objects.create(experiment=source, epoch=1, path=str(tmp_path / "s.ckpt"))
    make_experiment(alice, source.dataset, name="tuned", visibility=Visibility.ORGANISATION, pretrained=snapshot)
    client.force_login(alice)
    response = client.post(reverse("experiment-settings", args=[source.pk]), {"name": "base", "visibility": "private"})
    assert response.context["form"].errors["visibility"] == [
        "What was made from it is shared more widely than that (experiment “tuned”); narrow or delete those first."
    ]


def test_the_api_changes_settings_under_the_same_rule(alice, bob, charlie, team, bobs_experiment):
    url = f"/api/experiments/{bobs_experiment.pk}/"
    patch = {"content_type": "application/json"}
    assert api(charlie).patch(url, {"name": "x"}, **patch).status_code == 404
    member = make_experiment(alice, name="alice lenet", visibility=Visibility.TEAM, team=team)
    assert api(bob).patch(f"/api/experiments/{member.pk}/", {"name": "x"}, **patch).status_code == 403

    renamed = api(alice).patch(url, {"name": "renamed by the admin"}, **patch)
    assert renamed.status_code == 200
    assert (renamed.json()["name"], renamed.json()["visibility"]) == ("renamed by the admin", "team")

    on_team_data = make_experiment(bob, make_dataset(bob, name="vision faces", visibility="team", team=team),
                                   visibility=Visibility.TEAM, team=team)  # fmt: skip
    refused = api(bob).patch(f"/api/experiments/{on_team_data.pk}/", {"visibility": "organisation"}, **patch)
    assert refused.status_code == 400
    assert refused.json()["errors"]["visibility"][0] == TEAM_ONLY.format(what="an experiment on it")
    unknown = api(bob).patch(url, {"epochs": 99}, **patch)
    assert unknown.status_code == 400 and "Only name, team and visibility" in unknown.json()["errors"]["epochs"][0]
    assert api(bob).patch(url, [1, 2], **patch).status_code == 400
    assert api(bob).patch(url, {"team": "not a team", "visibility": "team"}, **patch).status_code == 400


# --- The pages in a browser ----------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_settings_page_and_a_page_that_loses_its_access(platform_server, alice, bob, team, monkeypatch):  # noqa: F811
    from playwright.sync_api import expect

    dataset = make_dataset(alice, name="vision faces", visibility=Visibility.TEAM, team=team)
    experiment = make_experiment(alice, dataset, name="vision lenet", visibility=Visibility.TEAM, team=team)
    with browser_page(monkeypatch) as page:
        log_in(page, platform_server, "alice", "alice-password")
        page.goto(platform_server + experiment.get_absolute_url())
        page.click("#settings-link")
        expect(page.locator("h1")).to_have_text("Settings of vision lenet")
        expect(page.locator("#id_visibility option")).to_have_count(2)  # no organisation: the dataset is Vision's
        shot(page, "experiment-settings")

        page.context.clear_cookies()
        log_in(page, platform_server, "bob", "bob-password")
        page.goto(platform_server + experiment.get_absolute_url())
        expect(page.locator("body")).to_have_attribute("data-live", "connected")
        Membership.objects.filter(user=bob).delete()
        status = page.locator("#live-status[role=status]")
        expect(status).to_have_text("You no longer have access to this page.", timeout=ACCESS_DEADLINE * 1000)
        expect(page.locator("body")).to_have_attribute("data-live", "access-lost")
        shot(page, "experiment-access-lost")
