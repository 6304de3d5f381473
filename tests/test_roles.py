"""A team's viewers see what it shares but put no work on it; a leaver's sessions, tokens and
sockets end at once; a leaver's work goes to a colleague.

otto (a member of Vision) owns a dataset and an experiment shared with Vision; alice is
Vision's admin, bob a member, vera a viewer, charlie an outsider (in team Audio).
"""

import asyncio

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse

from accounts import access
from accounts.directory import roles_from_groups, sync_teams
from accounts.models import AuditEntry, Membership, Source, Team, User, UserSession, Visibility
from config.asgi import application
from datasets.models import Dataset
from evaluations.models import Evaluation
from jobs.events import CLOSE_ACCESS_LOST
from models.models import SavedNetwork
from tests.dataset_fixtures import color_folder, fresh_folder  # noqa: F401 - fixtures
from tests.factories import make_dataset, make_experiment, make_token
from training.forms import data_with_defaults
from training.models import Experiment, Export, Snapshot, Sweep

Role = Membership.Role
ACCESS_DEADLINE = 5  # seconds: the rule's promise for an open socket


@pytest.fixture
def otto(team):
    user = User.objects.create_user("otto", password="otto-password")
    Membership.objects.create(user=user, team=team, role=Role.MEMBER)
    return user


@pytest.fixture
def vera(team):
    user = User.objects.create_user("vera", password="vera-password")
    Membership.objects.create(user=user, team=team, role=Role.VIEWER)
    return user


@pytest.fixture
def cast(otto, alice, bob, vera, charlie):
    return {"owner": otto, "team admin": alice, "member": bob, "viewer": vera, "outsider": charlie}


@pytest.fixture
def shared(otto, team, tmp_path):
    """otto's dataset and experiment, shared with team Vision, with a mean image and a snapshot."""
    dataset = make_dataset(otto, name="vision faces", visibility=Visibility.TEAM, team=team)
    dataset.directory.mkdir(parents=True, exist_ok=True)
    np.save(dataset.directory / "mean.npy", np.zeros((4, 4, 3), np.float32))
    experiment = make_experiment(otto, dataset, name="vision lenet", visibility=Visibility.TEAM, team=team)
    (tmp_path / "epoch2.ckpt").write_bytes(b"weights")
    snapshot = Snapshot.objects.create(experiment=experiment, epoch=2, path=str(tmp_path / "epoch2.ckpt"))
    return dataset, experiment, snapshot


def logged_in(user):
    client = Client()
    client.force_login(user)
    return client


def api(user):
    client = Client()
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {make_token(user).key}"
    return client


def experiment_data(dataset, **fields):
    return data_with_defaults({"name": "run", "dataset": dataset.pk, "network": "lenet", "epochs": 1, **fields})


# --- The rule ------------------------------------------------------------------------------------


def test_teams_for_leaves_out_the_teams_one_only_views(cast, team):
    assert [access.teams_for(user).filter(pk=team.pk).exists() for user in cast.values()] == [
        True, True, True, False, False,
    ]  # fmt: skip
    assert [access.may_work_for(user, team.pk) for user in cast.values()] == [True, True, True, False, False]
    assert "viewer of team Vision" in access.work_problem(cast["viewer"], team.pk)
    assert "not a member of team Vision" in access.work_problem(cast["outsider"], team.pk)
    assert access.work_problem(cast["viewer"], None) is None  # their own work


# --- Seeing: pages, downloads, API, sockets ------------------------------------------------------


def test_everyone_in_the_team_sees_and_downloads_what_it_shares_and_the_outsider_nothing(cast, shared):
    dataset, experiment, snapshot = shared
    urls = [
        dataset.get_absolute_url(),
        reverse("dataset-mean", args=[dataset.pk]),
        experiment.get_absolute_url(),
        reverse("experiment-metrics-csv", args=[experiment.pk]),
        reverse("snapshot-download", args=[experiment.pk, snapshot.pk]),
        reverse("team-detail", args=[experiment.team_id]),
    ]
    apis = [f"/api/datasets/{dataset.pk}/", f"/api/experiments/{experiment.pk}/"]
    seen = {
        who: [logged_in(user).get(url).status_code for url in urls] + [api(user).get(url).status_code for url in apis]
        for who, user in cast.items()
    }
    everything = [200] * (len(urls) + len(apis))
    assert seen == {
        "owner": everything,
        "team admin": everything,
        "member": everything,
        "viewer": everything,
        "outsider": [404] * len(everything),
    }


def socket_of(client, path):
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    headers = [(b"host", b"localhost"), (b"origin", b"http://localhost"), (b"cookie", cookie)]
    return WebsocketCommunicator(application, path, headers=headers)


@pytest.mark.django_db(transaction=True)
def test_the_viewer_follows_the_teams_sockets_and_the_outsider_is_refused(cast, shared):
    dataset, experiment, _ = shared

    async def opens(user, path):
        communicator = socket_of(await sync_to_async(logged_in)(user), path)
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return connected

    async def all_of_them():
        return {
            who: [
                await opens(user, f"/ws/datasets/{dataset.pk}/"),
                await opens(user, f"/ws/experiments/{experiment.pk}/"),
            ]
            for who, user in cast.items()
        }

    assert asyncio.run(all_of_them()) == {
        "owner": [True, True],
        "team admin": [True, True],
        "member": [True, True],
        "viewer": [True, True],
        "outsider": [False, False],
    }


# --- Working: what a viewer may not queue as the team's ----------------------------------------


def test_a_viewer_cannot_put_the_team_on_an_experiment_page_or_api(vera, bob, shared, team):
    dataset, _, _ = shared
    page = logged_in(vera).post(reverse("experiment-new"), experiment_data(dataset, visibility="team", team=team.pk))
    assert page.status_code == 200 and "viewers see its work but do not share" in page.content.decode()
    as_team = {"name": "run", "dataset": dataset.pk, "epochs": 1, "visibility": "team", "team": team.pk}
    refused = api(vera).post("/api/experiments/", as_team, "application/json")
    assert refused.status_code == 400, refused.content
    assert "viewers see its work but do not share" in str(refused.json())
    assert not Experiment.objects.filter(owner=vera).exists()
    # The same experiment as their own work is theirs to run; the member runs it as the team's.
    own = api(vera).post("/api/experiments/", {**as_team, "visibility": "private", "team": None}, "application/json")
    assert own.status_code == 201, own.content
    assert Experiment.objects.get(owner=vera).team_id is None
    sweep = {**as_team, "learning_rate": [0.01, 0.1]}
    assert api(vera).post("/api/experiments/", sweep, "application/json").status_code == 400
    assert not Sweep.objects.filter(owner=vera).exists()
    made = api(bob).post("/api/experiments/", sweep, "application/json")
    assert made.status_code == 201, made.content
    assert Sweep.objects.get(owner=bob).team_id == team.pk


def test_the_new_experiment_page_offers_a_viewer_none_of_the_teams_they_view(vera, shared, team):
    _, experiment, _ = shared
    page = logged_in(vera).get(reverse("experiment-new"), {"clone": experiment.pk})
    form = page.context["form"]
    assert list(form.fields["team"].queryset) == []
    # A clone of the team's experiment starts as the viewer's own, private work.
    assert form.initial["team"] is None and form.initial["visibility"] == Visibility.PRIVATE


def test_a_viewer_cannot_make_a_dataset_for_the_team_or_share_one_with_it(vera, team, color_folder):  # noqa: F811
    data = {"name": "mine", "source_folder": str(color_folder), "width": 8, "height": 8, "visibility": "team"}
    refused = api(vera).post("/api/datasets/", {**data, "team": team.pk}, "application/json")
    assert refused.status_code == 400, refused.content
    assert not Dataset.objects.filter(owner=vera).exists()
    mine = make_dataset(vera, name="vera's own")
    client = logged_in(vera)
    page = client.post(
        reverse("dataset-settings", args=[mine.pk]), {"name": "x", "visibility": "team", "team": team.pk}
    )
    assert page.status_code == 200, page.status_code
    mine.refresh_from_db()
    assert (mine.visibility, mine.team_id) == (Visibility.PRIVATE, None)
    # Nor a saved network.
    spec = "layers:\n  - {type: flatten}\n  - {type: dense}\n"
    client.post(reverse("network-list"), {"name": "n", "spec": spec, "visibility": "team", "team": team.pk})
    assert not SavedNetwork.objects.filter(owner=vera).exists()
    client.post(reverse("network-list"), {"name": "n", "spec": spec, "visibility": "private"})
    assert SavedNetwork.objects.filter(owner=vera).exists()  # the check was the team, not the spec


def test_an_owner_demoted_to_viewer_renames_but_no_longer_resumes_or_reshares(otto, shared, team):
    _, experiment, _ = shared
    Membership.objects.filter(user=otto, team=team).update(role=Role.VIEWER)
    Experiment.objects.filter(pk=experiment.pk).update(status=Experiment.Status.ABORTED)
    client = logged_in(otto)
    renamed = client.post(
        reverse("experiment-settings", args=[experiment.pk]), {"name": "renamed", "visibility": "team", "team": team.pk}
    )
    assert renamed.status_code == 302
    experiment.refresh_from_db()
    assert (experiment.name, experiment.team_id) == ("renamed", team.pk)
    assert client.post(reverse("experiment-resume", args=[experiment.pk])).status_code == 403
    answer = api(otto).post(f"/api/experiments/{experiment.pk}/resume/")
    assert answer.status_code == 403 and "viewer of team Vision" in answer.json()["detail"], answer.content
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.ABORTED
    # Made private, it cannot be shared with the team again.
    settings = reverse("experiment-settings", args=[experiment.pk])
    client.post(settings, {"name": "renamed", "visibility": "private", "team": team.pk})
    again = client.post(settings, {"name": "renamed", "visibility": "team", "team": team.pk})
    assert again.status_code == 200 and "viewer of team Vision" in again.content.decode()
    client.post(settings, {"name": "renamed", "visibility": "private"})
    once_more = client.post(settings, {"name": "renamed", "visibility": "team", "team": team.pk})
    assert "viewers see its work but do not share" in once_more.content.decode()
    experiment.refresh_from_db()
    assert (experiment.visibility, experiment.team_id) == (Visibility.PRIVATE, None)


def test_a_viewer_downloads_an_export_but_does_not_queue_one(vera, bob, shared, tmp_path):
    _, experiment, snapshot = shared
    url = f"/api/experiments/{experiment.pk}/snapshots/{snapshot.epoch:g}/exports/"
    refused = api(vera).post(url, {"format": "onnx"}, "application/json")
    assert refused.status_code == 403 and "viewer of team Vision" in refused.json()["detail"], refused.content
    assert (
        logged_in(vera)
        .post(reverse("snapshot-exports", args=[experiment.pk, snapshot.pk]), {"format": "onnx"})
        .status_code
        == 403
    )
    assert not Export.objects.exists()
    # The page offers the viewer no export button, and says why; a member gets the buttons.
    cell = reverse("snapshot-exports", args=[experiment.pk, snapshot.pk])
    for page in (logged_in(vera).get(experiment.get_absolute_url()), logged_in(vera).get(cell)):
        assert 'name="format"' not in page.content.decode() and "viewer of team Vision" in page.content.decode()
    assert 'name="format"' in logged_in(bob).get(cell).content.decode()
    queued = api(bob).post(url, {"format": "onnx"}, "application/json")
    assert queued.status_code == 201, queued.content
    export = Export.objects.get()
    (tmp_path / "export.zip").write_bytes(b"zip")
    Export.objects.filter(pk=export.pk).update(status=Export.Status.DONE, path=str(tmp_path / "export.zip"))
    # The one that exists is answered to the viewer too, and downloads.
    assert api(vera).post(url, {"format": "onnx"}, "application/json").status_code == 200
    assert logged_in(vera).get(reverse("export-download", args=[experiment.pk, export.pk])).status_code == 200


def test_a_viewers_evaluation_is_their_own_private_work(vera, bob, shared):
    _, experiment, snapshot = shared
    assert access.evaluation_reach(vera, experiment) == access.Reach(Visibility.PRIVATE)
    assert access.evaluation_reach(bob, experiment) == access.Reach.of(experiment)
    answer = api(vera).post(f"/api/experiments/{experiment.pk}/evaluations/", {"split": "val"}, "application/json")
    assert answer.status_code == 201, answer.content
    evaluation = Evaluation.objects.get(owner=vera)
    assert (evaluation.visibility, evaluation.team_id) == (Visibility.PRIVATE, None)
    assert (
        api(bob)
        .post(f"/api/experiments/{experiment.pk}/evaluations/", {"split": "val"}, "application/json")
        .status_code
        == 201
    )
    assert Evaluation.objects.get(owner=bob).team_id == experiment.team_id


# --- The team page and the directory --------------------------------------------------------------


def test_the_team_page_adds_viewers_and_makes_members_viewers(alice, bob, team):
    User.objects.create_user("dora", password="dora-password")
    client = logged_in(alice)
    page = client.get(reverse("team-detail", args=[team.pk])).content.decode()
    assert '<option value="viewer"' in page and "Viewers see and download" in page
    client.post(reverse("team-member-add", args=[team.pk]), {"username": "dora", "role": "viewer"})
    assert Membership.objects.get(user__username="dora", team=team).role == Role.VIEWER
    bobs = Membership.objects.get(user=bob, team=team)
    client.post(reverse("team-member-role", args=[team.pk, bobs.pk]), {"role": "viewer"})
    bobs.refresh_from_db()
    assert bobs.role == Role.VIEWER
    assert AuditEntry.objects.filter(action=AuditEntry.Action.ROLE_CHANGED, detail="bob as viewer").exists()
    # The last admin cannot become a viewer either.
    alices = Membership.objects.get(user=alice, team=team)
    client.post(reverse("team-member-role", args=[team.pk, alices.pk]), {"role": "viewer"})
    alices.refresh_from_db()
    assert alices.role == Role.ADMIN


def test_the_directory_maps_the_viewer_suffix_and_the_wider_role_wins():
    groups = ["vision:viewer", "audio:viewer", "audio", "robots:viewer", "robots:admin", ":viewer"]
    assert roles_from_groups(groups, ":admin", ":viewer") == {
        "vision": Role.VIEWER,
        "audio": Role.MEMBER,
        "robots": Role.ADMIN,
    }
    # Without a viewer suffix the group is a team of that name, as before.
    assert roles_from_groups(["vision:viewer"], ":admin") == {"vision:viewer": Role.MEMBER}


def test_a_directory_login_makes_a_viewer_and_a_member_again(db):
    olga = User.objects.create_user("olga")
    sync_teams(olga, ["vision:viewer"], source=Source.OIDC, admin_suffix=":admin", viewer_suffix=":viewer")
    assert Membership.objects.get(user=olga).role == Role.VIEWER
    sync_teams(olga, ["vision"], source=Source.OIDC, admin_suffix=":admin", viewer_suffix=":viewer")
    assert Membership.objects.get(user=olga, team=Team.objects.get(name="vision")).role == Role.MEMBER


# --- A leaver's sessions, tokens and sockets ------------------------------------------------------


def test_a_login_notes_its_session_and_a_logout_forgets_it(bob):
    client = Client()
    assert client.post(reverse("login"), {"username": "bob", "password": "bob-password"}).status_code == 302
    key = client.cookies["sessionid"].value
    assert UserSession.objects.filter(user=bob, session_key=key).exists()
    client.post(reverse("logout"))
    assert not UserSession.objects.filter(session_key=key).exists()
    assert not Session.objects.filter(session_key=key).exists()


def test_deactivating_ends_every_session_and_token_at_once(bob):
    browsers = [logged_in(bob), logged_in(bob)]
    token = api(bob)
    assert [b.get("/").status_code for b in browsers] == [200, 200]
    assert token.get("/api/experiments/").status_code == 200
    bob.is_active = False
    bob.save()
    assert not UserSession.objects.filter(user=bob).exists()
    assert not Session.objects.exists()
    for browser in browsers:
        answer = browser.get("/")
        assert answer.status_code == 302 and answer["Location"].startswith(reverse("login"))
    assert token.get("/api/experiments/").status_code == 401
    assert AuditEntry.objects.filter(action=AuditEntry.Action.SESSIONS_ENDED, object_repr="bob").exists()


def test_the_admins_deactivate_action_ends_the_sessions(root, bob):
    browser = logged_in(bob)
    changelist = reverse("admin:accounts_user_changelist")
    answer = logged_in(root).post(changelist, {"action": "deactivate", "_selected_action": [bob.pk]})
    assert answer.status_code == 302
    bob.refresh_from_db()
    assert not bob.is_active
    assert browser.get("/").status_code == 302


async def closes_for_lost_access(communicator):
    message = await communicator.receive_output(timeout=ACCESS_DEADLINE)
    assert message == {"type": "websocket.close", "code": CLOSE_ACCESS_LOST}, message


async def open_socket(client, path):
    communicator = socket_of(client, path)
    connected, code = await communicator.connect()
    assert connected, code
    while not await communicator.receive_nothing(timeout=0.3):
        await communicator.receive_output()
    return communicator


@pytest.mark.django_db(transaction=True)
def test_logging_out_closes_that_sessions_sockets_and_no_other(bob, shared):
    _, experiment, _ = shared
    path = f"/ws/experiments/{experiment.pk}/"
    logout = reverse("logout")  # the first reverse() imports every view: not part of the timing

    async def scenario():
        leaving, staying = await sync_to_async(logged_in)(bob), await sync_to_async(logged_in)(bob)
        closing, open_still = await open_socket(leaving, path), await open_socket(staying, path)
        started = asyncio.get_running_loop().time()
        await sync_to_async(leaving.post)(logout)
        await closes_for_lost_access(closing)
        took = asyncio.get_running_loop().time() - started
        assert await open_still.receive_nothing(timeout=2.5)  # another session of the same user stays
        await open_still.disconnect()
        return took

    took = asyncio.run(scenario())
    print(f"closed {took:.2f} s after the logout")
    assert took < ACCESS_DEADLINE


@pytest.mark.django_db(transaction=True)
def test_deactivating_closes_the_sockets_and_logs_the_next_page_out(bob, shared):
    dataset, _, _ = shared

    async def scenario():
        browser = await sync_to_async(logged_in)(bob)
        communicator = await open_socket(browser, f"/ws/datasets/{dataset.pk}/")

        def deactivate():
            bob.is_active = False
            bob.save()

        await sync_to_async(deactivate)()
        await closes_for_lost_access(communicator)
        return browser

    browser = asyncio.run(scenario())
    assert browser.get(dataset.get_absolute_url()).status_code == 302


# --- A leaver's work goes to a colleague ---------------------------------------------------------


@pytest.fixture
def root(db):
    return User.objects.create_superuser("root", password="root-password")


def test_the_admin_hands_a_leavers_work_to_a_colleague(root, otto, bob, shared, team):
    dataset, experiment, _ = shared
    private = make_dataset(otto, name="otto's private")
    network = SavedNetwork.objects.create(
        owner=otto,
        name="otto net",
        spec="layers:\n  - {type: flatten}\n  - {type: dense}\n",
        visibility=Visibility.TEAM,
        team=team,
    )
    admin = logged_in(root)
    changelist = reverse("admin:accounts_user_changelist")
    chosen = {"action": "hand_over_work", "_selected_action": [otto.pk]}
    form = admin.post(changelist, chosen)
    assert form.status_code == 200
    page = form.content.decode()
    assert "Hand over work" in page and "2 datasets" in page and "1 experiment" in page
    done = admin.post(changelist, {**chosen, "recipient": bob.pk, "apply": "Hand over"})
    assert done.status_code == 302
    for obj in (dataset, experiment, private, network):
        obj.refresh_from_db()
        assert obj.owner == bob, obj
    # Who else sees each is as before.
    assert (dataset.visibility, dataset.team_id) == (Visibility.TEAM, team.pk)
    assert (private.visibility, private.team_id) == (Visibility.PRIVATE, None)
    entries = AuditEntry.objects.filter(action=AuditEntry.Action.HANDED_OVER)
    assert entries.filter(object_repr="vision faces", team=team, actor=root).exists()
    assert entries.filter(object_repr="otto", detail__startswith="to bob: 2 datasets").exists()
    assert not Dataset.objects.filter(owner=otto).exists()


def test_an_inactive_recipient_is_refused(root, otto, bob, shared):
    dataset, _, _ = shared
    User.objects.filter(pk=bob.pk).update(is_active=False)
    changelist = reverse("admin:accounts_user_changelist")
    answer = logged_in(root).post(
        changelist, {"action": "hand_over_work", "_selected_action": [otto.pk], "recipient": bob.pk, "apply": "1"}
    )
    assert answer.status_code == 200 and "bob is inactive" in answer.content.decode()
    dataset.refresh_from_db()
    assert dataset.owner == otto
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.HANDED_OVER).exists()
    # The function refuses it too, and refuses handing work to oneself.
    from accounts.handover import HandoverRefused, hand_over

    bob.refresh_from_db()
    with pytest.raises(HandoverRefused, match="inactive"):
        hand_over(otto, bob)
    with pytest.raises(HandoverRefused, match="themselves"):
        hand_over(otto, otto)


@pytest.mark.django_db(transaction=True)
def test_a_handover_closes_the_leavers_socket_on_what_was_their_private_work(otto, bob):
    from accounts.handover import hand_over

    private = make_experiment(otto, name="otto's own run")

    async def scenario():
        browser = await sync_to_async(logged_in)(otto)
        communicator = await open_socket(browser, f"/ws/experiments/{private.pk}/")
        # One UPDATE for all of otto's rows: no save to hear, so hand_over announces it.
        await sync_to_async(hand_over)(otto, bob)
        await closes_for_lost_access(communicator)

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_idle_sockets_ask_the_database_only_when_access_may_have_changed(bob, shared, monkeypatch):
    from jobs import events

    _, experiment, _ = shared
    monkeypatch.setattr(events.GroupConsumer, "access_check_seconds", 0.1)
    monkeypatch.setattr(events, "GENERATION_READ_SECONDS", 0.05)
    asked = []
    may_see = events.GroupConsumer._user_may_see

    def counted(consumer):
        asked.append(consumer.channel_name)
        return may_see(consumer)

    monkeypatch.setattr(events.GroupConsumer, "_user_may_see", counted)

    async def scenario():
        browser = await sync_to_async(logged_in)(bob)
        watchers = [await open_socket(browser, f"/ws/experiments/{experiment.pk}/") for _ in range(3)]
        await asyncio.sleep(0.5)  # each socket's first check
        before = len(asked)
        await asyncio.sleep(1.5)  # fifteen idle checks each
        idle = len(asked) - before
        # Something that decides access is saved: each socket asks once, and keeps its access.
        await sync_to_async(lambda: Membership.objects.get(user=bob).save())()
        await asyncio.sleep(1)
        after_change = len(asked) - before - idle
        for communicator in watchers:
            assert await communicator.receive_nothing(timeout=0.1)
            await communicator.disconnect()
        return idle, after_change

    idle, after_change = asyncio.run(scenario())
    assert idle == 0
    assert after_change == 3
