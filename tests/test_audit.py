"""The audit log: what is recorded, who may read it, and that nothing can change it."""

import csv
import io
from datetime import timedelta

import pytest
from django.contrib.admin.models import ADDITION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse
from django.utils import timezone

from accounts.directory import sync_teams
from accounts.models import AuditEntry, Membership, Source, Team, User, Visibility
from tests.factories import make_dataset, make_experiment, make_token
from training.models import Export, Snapshot

Action = AuditEntry.Action


def entries(action):
    return list(AuditEntry.objects.filter(action=action))


@pytest.fixture
def root(db):
    return User.objects.create_superuser("root", password="root-password")


# --- What is recorded ------------------------------------------------------------------------


def test_a_password_login_and_logout_are_recorded_with_method_and_address(client, alice):
    client.post(reverse("login"), {"username": "alice", "password": "alice-password"}, REMOTE_ADDR="10.1.2.3")
    client.post(reverse("logout"), REMOTE_ADDR="10.1.2.3")
    (login,) = entries(Action.LOGIN)
    assert (login.actor, login.detail, login.address) == (alice, "password", "10.1.2.3")
    (logout,) = entries(Action.LOGOUT)
    assert logout.actor == alice


def test_a_refused_login_is_recorded_with_the_name_tried(client, alice):
    client.post(reverse("login"), {"username": "alice", "password": "wrong"}, REMOTE_ADDR="10.9.9.9")
    (failed,) = entries(Action.LOGIN_FAILED)
    assert (failed.actor, failed.actor_name, failed.address, failed.detail) == (None, "alice", "10.9.9.9", "password")


def test_a_login_records_the_backend_that_let_the_user_in(rf, alice):
    from django.contrib.auth import login
    from django.contrib.sessions.backends.db import SessionStore

    request = rf.get("/")
    request.session = SessionStore()
    login(request, alice, backend="accounts.oidc.DirectoryOIDCBackend")
    assert entries(Action.LOGIN)[0].detail == "OpenID Connect"


def test_sharing_changes_on_the_settings_pages_and_the_api_are_recorded(client, alice, team):
    dataset = make_dataset(alice, visibility=Visibility.ORGANISATION)
    experiment = make_experiment(alice, dataset)
    client.force_login(alice)
    client.post(
        reverse("dataset-settings", args=[dataset.pk]), {"name": dataset.name, "visibility": "team", "team": team.pk}
    )
    client.post(reverse("experiment-settings", args=[experiment.pk]), {"name": "renamed only", "visibility": "private"})
    token = make_token(alice)
    response = client.patch(
        f"/api/experiments/{experiment.pk}/",
        {"visibility": "team", "team": team.pk},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Token {token.key}",
        REMOTE_ADDR="10.0.0.7",
    )
    assert response.status_code == 200
    dataset_change, experiment_change = sorted(entries(Action.SHARING), key=lambda e: e.pk)
    assert (dataset_change.object_repr, dataset_change.detail) == (dataset.name, "organisation → team Vision")
    assert dataset_change.team == team
    # The rename alone changed no sharing: only the API's change is there.
    assert (experiment_change.actor, experiment_change.detail) == (alice, "private → team Vision")
    assert experiment_change.address == "10.0.0.7"


def test_deletions_keep_the_name_of_what_was_deleted(client, alice, team):
    dataset = make_dataset(alice, name="faces", visibility=Visibility.TEAM, team=team)
    experiment = make_experiment(alice, dataset, name="faces run", visibility=Visibility.TEAM, team=team)
    client.force_login(alice)
    client.post(reverse("experiment-delete", args=[experiment.pk]))
    client.post(reverse("dataset-delete", args=[dataset.pk]))
    deleted = {e.object_repr: e for e in entries(Action.DELETED)}
    assert set(deleted) == {"faces", "faces run"}
    assert deleted["faces"].content_type == ContentType.objects.get(app_label="datasets", model="dataset")
    assert deleted["faces"].object_id == str(dataset.pk)
    assert deleted["faces run"].team == team


def test_a_refused_delete_records_nothing(client, alice):
    dataset = make_dataset(alice)
    make_experiment(alice, dataset)
    client.force_login(alice)
    client.post(reverse("dataset-delete", args=[dataset.pk]))
    assert not entries(Action.DELETED)


def test_snapshot_and_export_downloads_are_recorded(client, bob, alice, team, tmp_path):
    experiment = make_experiment(alice, visibility=Visibility.TEAM, team=team)
    (tmp_path / "s.ckpt").write_bytes(b"weights")
    snapshot = Snapshot.objects.create(experiment=experiment, epoch=2, path=str(tmp_path / "s.ckpt"))
    (tmp_path / "e.zip").write_bytes(b"zip")
    export = Export.objects.create(
        experiment=experiment,
        snapshot=snapshot,
        snapshot_epoch=2,
        format="onnx",
        path=str(tmp_path / "e.zip"),
        status=Export.Status.DONE,
    )
    client.force_login(bob)
    assert client.get(reverse("snapshot-download", args=[experiment.pk, snapshot.pk])).status_code == 200
    assert client.get(reverse("export-download", args=[experiment.pk, export.pk])).status_code == 200
    snapshot_entry, export_entry = sorted(entries(Action.DOWNLOAD), key=lambda e: e.pk)
    assert (snapshot_entry.actor, snapshot_entry.detail, snapshot_entry.team) == (bob, "snapshot of epoch 2", team)
    assert export_entry.detail.startswith("export ")


def test_directory_sync_records_what_it_changes(alice):
    sync_teams(alice, ["vision-lab:admin", "robots"], source=Source.OIDC, admin_suffix=":admin")
    sync_teams(alice, ["vision-lab"], source=Source.OIDC, admin_suffix=":admin")
    actions = [(e.action, e.object_repr, e.detail) for e in AuditEntry.objects.order_by("pk")]
    assert actions == [
        (Action.TEAM_CREATED, "vision-lab", ""),
        (Action.MEMBER_ADDED, "vision-lab", "alice as admin"),
        (Action.TEAM_CREATED, "robots", ""),
        (Action.MEMBER_ADDED, "robots", "alice as member"),
        (Action.ROLE_CHANGED, "vision-lab", "alice as member"),
        (Action.MEMBER_REMOVED, "robots", "alice as member"),
    ]
    assert {e.actor_name for e in AuditEntry.objects.all()} == {"directory (OpenID Connect)"}


def test_admin_actions_are_recorded_from_the_admins_log(client, root, alice, team):
    client.force_login(root)
    client.post(
        reverse("admin:accounts_team_change", args=[team.pk]),
        {
            "name": "Vision2",
            "source": "local",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
        },
    )
    (entry,) = entries(Action.ADMIN)
    assert (entry.actor, entry.object_repr, entry.team) == (root, "Vision2", team)
    assert entry.detail.startswith("changed")


# --- Nothing can change it ---------------------------------------------------------------------


def test_an_entry_cannot_be_changed_or_deleted(alice):
    entry = AuditEntry.objects.create(action=Action.LOGIN, actor=alice, actor_name="alice")
    entry.detail = "edited"
    with pytest.raises(PermissionError):
        entry.save()
    with pytest.raises(PermissionError):
        entry.delete()
    with pytest.raises(PermissionError):
        AuditEntry.objects.filter(pk=entry.pk).update(detail="edited")
    with pytest.raises(PermissionError):
        AuditEntry.objects.all().delete()
    assert AuditEntry.objects.get().detail == ""


def test_an_entry_outlives_its_user(alice):
    AuditEntry.objects.create(action=Action.LOGIN, actor=alice, actor_name="alice")
    alice.delete()
    entry = AuditEntry.objects.get()
    assert (entry.actor, entry.actor_name) == (None, "alice")


def test_the_admin_shows_entries_read_only(client, root, alice):
    entry = AuditEntry.objects.create(action=Action.LOGIN, actor=alice, actor_name="alice")
    client.force_login(root)
    assert client.get(reverse("admin:accounts_auditentry_changelist")).status_code == 200
    assert client.get(reverse("admin:accounts_auditentry_change", args=[entry.pk])).status_code == 200
    assert client.get(reverse("admin:accounts_auditentry_add")).status_code == 403
    assert client.post(reverse("admin:accounts_auditentry_delete", args=[entry.pk]), {"post": "yes"}).status_code == 403
    assert AuditEntry.objects.filter(pk=entry.pk).exists()


# --- Who reads it --------------------------------------------------------------------------------


@pytest.fixture
def log(alice, charlie, team):
    audio = Team.objects.get(name="Audio")
    made = [
        AuditEntry.objects.create(action=Action.DELETED, actor=alice, actor_name="alice", team=team, object_repr="v1"),
        AuditEntry.objects.create(action=Action.LOGOUT, actor=charlie, actor_name="charlie", object_repr="charlie"),
        AuditEntry.objects.create(
            action=Action.DELETED, actor=charlie, actor_name="charlie", team=audio, object_repr="a1"
        ),
    ]
    return made


def shown(response):
    """The objects of the CSV's entries, less the viewer's own login by force_login."""
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))[1:]
    return [row[5] for row in rows if row[1] != "login"]


def test_an_organisation_admin_sees_everything_and_filters_it(client, root, log):
    client.force_login(root)
    assert shown(client.get("/audit/", {"format": "csv"})) == ["a1", "charlie", "v1"]
    assert shown(client.get("/audit/", {"format": "csv", "action": "deleted", "user": "charlie"})) == ["a1"]
    assert shown(client.get("/audit/", {"format": "csv", "team": log[0].team_id})) == ["v1"]
    tomorrow = (timezone.localdate() + timedelta(days=1)).isoformat()
    assert shown(client.get("/audit/", {"format": "csv", "since": tomorrow})) == []
    page = client.get("/audit/", {"action": "deleted"}).content.decode()
    assert page.count("<td>Deleted</td>") == 2 and "<td>Logged out</td>" not in page


def test_a_bad_filter_is_a_form_error_not_a_crash(client, root, log):
    client.force_login(root)
    response = client.get("/audit/", {"since": "yesterday", "until": "2020-01-01"})
    assert response.status_code == 200
    assert "Enter a valid date." in response.content.decode()


def test_a_team_admin_sees_only_the_teams_entries(client, alice, log):
    client.force_login(alice)
    assert shown(client.get("/audit/", {"format": "csv"})) == ["v1"]


def test_members_and_outsiders_may_not_read_the_log(client, bob, charlie, log):
    for user in (bob, charlie):
        client.force_login(user)
        assert client.get("/audit/").status_code == 403


def test_a_csv_cell_never_starts_a_formula(client, root, alice):
    AuditEntry.objects.create(action=Action.DELETED, actor=alice, actor_name="alice", object_repr="=HYPERLINK(1)")
    client.force_login(root)
    assert shown(client.get("/audit/", {"format": "csv"})) == ["'=HYPERLINK(1)"]


def test_an_admin_change_of_a_membership_carries_its_team(alice, team):
    membership = Membership.objects.get(user=alice, team=team)
    LogEntry.objects.log_actions(alice.pk, [membership], ADDITION, single_object=True)
    (entry,) = entries(Action.ADMIN)
    assert (entry.team, entry.object_repr, entry.detail) == (team, str(membership), "added")
