"""The one visibility rule, asked by every page and API endpoint.

alice owns; bob is in her team (a plain member); charlie is not.
"""

import pytest
from django.urls import reverse

from accounts.access import can_edit, can_view
from accounts.models import Visibility
from datasets.models import Dataset
from tests.factories import make_dataset, make_experiment, make_token
from training.forms import data_with_defaults
from training.models import Experiment


@pytest.mark.parametrize(
    ("visibility", "bob_sees", "charlie_sees"),
    [(Visibility.PRIVATE, False, False), (Visibility.TEAM, True, False), (Visibility.ORGANISATION, True, True)],
)
def test_the_rule_for_each_visibility(alice, bob, charlie, team, visibility, bob_sees, charlie_sees):
    dataset = make_dataset(alice, visibility=visibility, team=team)

    assert can_view(alice, dataset)
    assert can_view(bob, dataset) is bob_sees
    assert can_view(charlie, dataset) is charlie_sees
    assert list(Dataset.objects.visible_to(charlie)) == ([dataset] if charlie_sees else [])


def test_only_the_owner_and_team_admins_may_change(alice, bob, charlie, team):
    dataset = make_dataset(bob, visibility=Visibility.TEAM, team=team)

    assert can_edit(bob, dataset)  # owner
    assert can_edit(alice, dataset)  # admin of the team
    assert not can_edit(charlie, dataset)
    mine = make_dataset(alice, visibility=Visibility.TEAM, team=team)
    assert not can_edit(bob, mine)  # a plain member sees but may not change


def test_a_team_admin_cannot_change_a_private_dataset_of_a_member(alice, bob, team):
    dataset = make_dataset(bob, visibility=Visibility.PRIVATE, team=team)
    assert not can_view(alice, dataset)
    assert not can_edit(alice, dataset)


def test_inactive_and_anonymous_users_see_nothing(alice, django_user_model):
    make_dataset(alice, visibility=Visibility.ORGANISATION)
    from django.contrib.auth.models import AnonymousUser

    assert not Dataset.objects.visible_to(AnonymousUser()).exists()
    alice.is_active = False
    assert not Dataset.objects.visible_to(alice).exists()


# --- Pages ---------------------------------------------------------------------------------


@pytest.fixture
def team_experiment(alice, team):
    return make_experiment(alice, visibility=Visibility.TEAM, team=team)


def page_urls(experiment):
    return [
        reverse("dataset-detail", args=[experiment.dataset.pk]),
        reverse("experiment-detail", args=[experiment.pk]),
    ]


def test_every_page_needs_a_login(client, team_experiment):
    for url in [reverse("console"), reverse("dataset-new"), reverse("experiment-new"), *page_urls(team_experiment)]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login"))


def test_owner_and_team_member_see_the_pages(client, alice, bob, team_experiment):
    for user in (alice, bob):
        client.force_login(user)
        for url in page_urls(team_experiment):
            assert client.get(url).status_code == 200, (user, url)
        console = client.get(reverse("console")).content.decode()
        assert team_experiment.name in console
        assert team_experiment.dataset.name in console


def test_outsider_gets_404_and_no_trace_in_lists(client, charlie, team_experiment):
    client.force_login(charlie)
    for url in page_urls(team_experiment):
        assert client.get(url).status_code == 404, url
    console = client.get(reverse("console")).content.decode()
    assert team_experiment.name not in console
    assert team_experiment.dataset.name not in console
    form = client.get(reverse("experiment-new")).content.decode()
    assert team_experiment.dataset.name not in form


@pytest.mark.parametrize("action", ["experiment-abort", "experiment-delete", "experiment-classify"])
def test_outsider_cannot_act_on_an_experiment(client, charlie, team_experiment, action):
    client.force_login(charlie)
    assert client.post(reverse(action, args=[team_experiment.pk])).status_code == 404
    assert Experiment.objects.filter(pk=team_experiment.pk, status=Experiment.Status.DONE).exists()


@pytest.mark.parametrize("action", ["experiment-abort", "experiment-delete"])
def test_team_member_may_look_but_not_change(client, bob, team_experiment, action):
    team_experiment.status = Experiment.Status.QUEUED
    team_experiment.save()
    client.force_login(bob)
    assert client.post(reverse(action, args=[team_experiment.pk])).status_code == 403
    assert Experiment.objects.get(pk=team_experiment.pk).status == Experiment.Status.QUEUED


def test_outsider_cannot_delete_a_dataset(client, charlie, bob, alice, team):
    dataset = make_dataset(alice, visibility=Visibility.TEAM, team=team)
    client.force_login(charlie)
    assert client.post(reverse("dataset-delete", args=[dataset.pk])).status_code == 404
    client.force_login(bob)
    assert client.post(reverse("dataset-delete", args=[dataset.pk])).status_code == 403
    assert Dataset.objects.filter(pk=dataset.pk).exists()


def test_owner_deletes_a_dataset_but_not_one_in_use(client, alice):
    unused = make_dataset(alice, name="unused")
    used = make_experiment(alice).dataset
    client.force_login(alice)

    client.post(reverse("dataset-delete", args=[unused.pk]))
    response = client.post(reverse("dataset-delete", args=[used.pk]), follow=True)

    assert not Dataset.objects.filter(pk=unused.pk).exists()
    assert Dataset.objects.filter(pk=used.pk).exists()
    assert "used by experiments" in response.content.decode()


def test_experiment_form_refuses_a_dataset_the_user_cannot_see(client, charlie, alice):
    hidden = make_dataset(alice)
    client.force_login(charlie)
    response = client.post(
        reverse("experiment-new"),
        data_with_defaults({"name": "x", "dataset": hidden.pk, "epochs": 1, "batch_size": 4}),
    )
    assert response.status_code == 200
    assert "dataset" in response.context["form"].errors
    assert not Experiment.objects.exists()


def test_team_visibility_needs_one_of_your_teams(client, charlie, team, mnist_root):
    client.force_login(charlie)
    response = client.post(
        reverse("dataset-new"),
        {"name": "x", "source_folder": str(mnist_root / "train"), "channels": 1, "width": 28, "height": 28,
         "resize_mode": "squash", "val_percent": 20, "visibility": "team", "team": team.pk},
    )  # fmt: skip
    assert "Select a valid choice" in response.content.decode()
    assert not Dataset.objects.exists()


# --- API -----------------------------------------------------------------------------------


def api_client(client, user):
    token = make_token(user)
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {token.key}"
    return client


def test_api_needs_a_token(client, team_experiment):
    assert client.get("/api/experiments/").status_code == 401
    client.defaults["HTTP_AUTHORIZATION"] = "Token not-a-token"
    assert client.get("/api/experiments/").status_code == 401


def test_api_lists_and_reads_for_owner_and_team_member(client, alice, bob, team_experiment):
    for user in (alice, bob):
        api = api_client(client, user)
        assert [e["id"] for e in api.get("/api/experiments/").json()["results"]] == [team_experiment.pk]
        assert [d["id"] for d in api.get("/api/datasets/").json()["results"]] == [team_experiment.dataset.pk]
        detail = api.get(f"/api/experiments/{team_experiment.pk}/").json()
        assert detail["metrics"][0]["val_accuracy"] == pytest.approx(0.61)
        assert api.get(f"/api/datasets/{team_experiment.dataset.pk}/").status_code == 200


def test_api_hides_everything_from_an_outsider(client, charlie, team_experiment):
    api = api_client(client, charlie)
    assert api.get("/api/experiments/").json()["results"] == []
    assert api.get("/api/datasets/").json()["results"] == []
    for url in [
        f"/api/experiments/{team_experiment.pk}/",
        f"/api/datasets/{team_experiment.dataset.pk}/",
    ]:
        assert api.get(url).status_code == 404, url
    for url in [f"/api/experiments/{team_experiment.pk}/abort/", f"/api/experiments/{team_experiment.pk}/classify/"]:
        assert api.post(url).status_code == 404, url


def test_api_abort_is_for_those_who_may_change(client, alice, bob, team_experiment):
    team_experiment.status = Experiment.Status.QUEUED
    team_experiment.save()
    assert api_client(client, bob).post(f"/api/experiments/{team_experiment.pk}/abort/").status_code == 403
    response = api_client(client, alice).post(f"/api/experiments/{team_experiment.pk}/abort/")
    assert response.status_code == 200
    assert response.json()["status"] == "aborted"


def test_api_create_checks_like_the_form(client, alice, tmp_path):
    api = api_client(client, alice)
    response = api.post(
        "/api/datasets/",
        {"name": "escape", "source_folder": str(tmp_path), "channels": 1, "width": 28, "height": 28,
         "resize_mode": "squash", "val_percent": 20, "visibility": "private"},
        content_type="application/json",
    )  # fmt: skip
    assert response.status_code == 400
    assert "outside the import folders" in response.json()["errors"]["source_folder"][0]
    assert not Dataset.objects.exists()
