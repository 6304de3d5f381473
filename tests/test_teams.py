"""Teams pages: alice is Vision's admin, bob a member, charlie an outsider (in Audio)."""

import pytest
from django.test import override_settings
from django.urls import reverse

from accounts.models import AuditEntry, Membership, Source, Team, User, Visibility
from tests.factories import make_dataset, make_experiment

Action = AuditEntry.Action
Role = Membership.Role


@pytest.fixture
def dora(db):
    return User.objects.create_user("dora", password="dora-password")


def role_of(user, team):
    membership = Membership.objects.filter(user=user, team=team).first()
    return membership.role if membership else None


def test_the_list_shows_the_users_own_teams(client, bob, charlie):
    client.force_login(bob)
    page = client.get(reverse("team-list")).content.decode()
    assert "Vision" in page and "Audio" not in page


def test_a_team_page_lists_members_visible_work_and_usage(client, alice, bob, team):
    shared = make_dataset(alice, name="shared faces", visibility=Visibility.TEAM, team=team, stored_bytes=3_000_000)
    make_dataset(alice, name="alice private", team=team, stored_bytes=1_000_000)
    make_experiment(alice, shared, name="shared run", visibility=Visibility.TEAM, team=team)
    client.force_login(bob)
    response = client.get(reverse("team-detail", args=[team.pk]))
    page = response.content.decode()
    assert "alice" in page and "bob" in page
    assert "shared faces" in page and "shared run" in page and "alice private" not in page
    assert response.context["usage"] == {"datasets": 2, "experiments": 1, "bytes": 4_000_000}


def test_an_outsider_cannot_see_a_team(client, charlie, team):
    client.force_login(charlie)
    assert client.get(reverse("team-detail", args=[team.pk])).status_code == 404
    assert client.post(reverse("team-leave", args=[team.pk])).status_code == 404


def test_a_team_admin_adds_changes_and_removes_members_and_each_is_audited(client, alice, team, dora):
    client.force_login(alice)
    client.post(reverse("team-member-add", args=[team.pk]), {"username": "dora", "role": "member"})
    assert role_of(dora, team) == Role.MEMBER
    membership = Membership.objects.get(user=dora, team=team)
    client.post(reverse("team-member-role", args=[team.pk, membership.pk]), {"role": "admin"})
    assert role_of(dora, team) == Role.ADMIN
    client.post(reverse("team-member-remove", args=[team.pk, membership.pk]))
    assert role_of(dora, team) is None
    logged = list(AuditEntry.objects.filter(team=team).order_by("pk").values_list("action", "actor_name", "detail"))
    assert logged == [
        (Action.MEMBER_ADDED, "alice", "dora as member"),
        (Action.ROLE_CHANGED, "alice", "dora as admin"),
        (Action.MEMBER_REMOVED, "alice", "dora as admin"),
    ]


def test_adding_an_unknown_or_present_user_is_a_form_error(client, alice, bob, team):
    client.force_login(alice)
    response = client.post(reverse("team-member-add", args=[team.pk]), {"username": "nobody", "role": "member"})
    assert response.status_code == 400
    assert "There is no active user called “nobody”." in response.content.decode()
    response = client.post(reverse("team-member-add", args=[team.pk]), {"username": "bob", "role": "member"})
    assert "bob is already in this team." in response.content.decode()


def test_a_member_may_not_change_the_team(client, alice, bob, team, dora):
    client.force_login(bob)
    client.post(reverse("team-member-add", args=[team.pk]), {"username": "dora", "role": "admin"})
    alice_membership = Membership.objects.get(user=alice, team=team)
    client.post(reverse("team-member-role", args=[team.pk, alice_membership.pk]), {"role": "member"})
    client.post(reverse("team-member-remove", args=[team.pk, alice_membership.pk]))
    assert role_of(dora, team) is None and role_of(alice, team) == Role.ADMIN
    assert not AuditEntry.objects.filter(team=team).exists()


def test_a_member_may_leave(client, bob, team):
    client.force_login(bob)
    assert client.post(reverse("team-leave", args=[team.pk])).status_code == 302
    assert role_of(bob, team) is None
    assert AuditEntry.objects.get(action=Action.MEMBER_REMOVED).detail == "bob left"


def test_the_last_admin_names_another_before_leaving(client, alice, bob, team):
    client.force_login(alice)
    response = client.post(reverse("team-leave", args=[team.pk]))
    assert response.status_code == 400
    assert "last admin" in response.content.decode()
    assert role_of(alice, team) == Role.ADMIN
    bob_membership = Membership.objects.get(user=bob, team=team)
    client.post(reverse("team-leave", args=[team.pk]), {"successor": bob_membership.pk})
    assert role_of(alice, team) is None and role_of(bob, team) == Role.ADMIN


def test_the_last_admin_cannot_demote_themselves(client, alice, bob, team):
    client.force_login(alice)
    mine = Membership.objects.get(user=alice, team=team)
    client.post(reverse("team-member-role", args=[team.pk, mine.pk]), {"role": "member"})
    assert role_of(alice, team) == Role.ADMIN


def test_the_last_member_may_leave_alone(client, dora):
    team = Team.objects.create(name="Solo")
    Membership.objects.create(user=dora, team=team, role=Role.ADMIN)
    client.force_login(dora)
    client.post(reverse("team-leave", args=[team.pk]))
    assert role_of(dora, team) is None


def test_anyone_creates_a_team_and_becomes_its_admin(client, dora):
    client.force_login(dora)
    response = client.post(reverse("team-list"), {"name": "Robots"})
    team = Team.objects.get(name="Robots")
    assert response.status_code == 302 and role_of(dora, team) == Role.ADMIN
    assert set(AuditEntry.objects.filter(team=team).values_list("action", flat=True)) == {
        Action.TEAM_CREATED,
        Action.MEMBER_ADDED,
    }
    assert "already exists" in client.post(reverse("team-list"), {"name": "Robots"}).content.decode()


@override_settings(TEAM_CREATION="admins")
def test_team_creation_can_be_kept_for_organisation_admins(client, dora):
    client.force_login(dora)
    assert "New team" not in client.get(reverse("team-list")).content.decode()
    client.post(reverse("team-list"), {"name": "Robots"})
    assert not Team.objects.filter(name="Robots").exists()
    root = User.objects.create_superuser("root", password="root-password")
    client.force_login(root)
    client.post(reverse("team-list"), {"name": "Robots"})
    assert Team.objects.filter(name="Robots").exists()


def test_a_directory_team_is_managed_there(client, alice, team, dora):
    Team.objects.filter(pk=team.pk).update(source=Source.OIDC)
    Membership.objects.filter(user=alice, team=team).update(source=Source.OIDC)
    client.force_login(alice)
    page = client.get(reverse("team-detail", args=[team.pk])).content.decode()
    assert "comes from the directory" in page
    assert "Add a member" not in page and "Leave Vision" not in page
    client.post(reverse("team-member-add", args=[team.pk]), {"username": "dora", "role": "member"})
    client.post(reverse("team-leave", args=[team.pk]))
    assert role_of(dora, team) is None and role_of(alice, team) == Role.ADMIN


def test_a_local_member_of_a_directory_team_can_still_be_removed(client, alice, bob, team):
    Team.objects.filter(pk=team.pk).update(source=Source.OIDC)
    Membership.objects.filter(user=alice, team=team).update(source=Source.OIDC)
    client.force_login(alice)
    bob_membership = Membership.objects.get(user=bob, team=team)
    client.post(reverse("team-member-remove", args=[team.pk, bob_membership.pk]))
    assert role_of(bob, team) is None
