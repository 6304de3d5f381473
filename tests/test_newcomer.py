"""What a new user meets first: the error pages, the list pages at the addresses people try,
the folder suggestions, the API token page, the network library (save, edit, rename,
visualize with the error's line) and the new-experiment page's editor and sweep count.
alice owns and is her team's admin, bob is a plain member of her team, charlie is outside it,
dave has no team at all."""

import json
import re

import pytest
from django.test import RequestFactory, override_settings
from django.urls import reverse
from django.views.defaults import server_error

from accounts.models import User, Visibility
from datasets import sources
from evaluations.models import Evaluation
from models.models import SavedNetwork
from models.networks import error_line, standard_spec_text
from tests.dataset_fixtures import png_bytes, write_tree
from tests.factories import make_dataset, make_experiment, make_token

SPEC = "layers:\n  - {type: flatten}\n  - {type: dense, features: classes}\n"


@pytest.fixture
def dave(db):
    return User.objects.create_user("dave", password="dave-password")


def save_network(owner, *, name="tiny", visibility=Visibility.PRIVATE, team=None, spec=SPEC):
    return SavedNetwork.objects.create(owner=owner, name=name, spec=spec, visibility=visibility, team=team)


def make_evaluation(experiment, **fields):
    return Evaluation.objects.create(
        owner=experiment.owner, experiment=experiment, snapshot_epoch=2, source=Evaluation.Source.SPLIT,
        split="val", visibility=experiment.visibility, team=experiment.team, **fields,
    )  # fmt: skip


# --- 404 and 500 --------------------------------------------------------------------------


@override_settings(DEBUG=False)
def test_the_404_page_says_why_in_plain_words(client, alice):
    client.force_login(alice)
    response = client.get(reverse("dataset-detail", args=[98765]))
    assert response.status_code == 404
    html = response.content.decode()
    assert 'id="not-found"' in html and "No dataset matches the given query." in html
    assert 'href="/"' in html and "Log out alice" in html  # the site's own page, menu and all

    nowhere = client.get("/no/such/page/").content.decode()
    assert "There is no page at this address." in nowhere and "Resolver404" not in nowhere


@override_settings(DEBUG=False)
def test_a_hidden_object_reads_as_absent_on_the_404_page(client, alice, charlie):
    dataset = make_dataset(alice)
    client.force_login(charlie)
    response = client.get(dataset.get_absolute_url())
    assert response.status_code == 404 and "No dataset matches the given query." in response.content.decode()
    assert dataset.name not in response.content.decode()


@override_settings(DEBUG=False)
def test_the_500_page_needs_no_database_and_no_request_context():
    # No db fixture: a query from the template would fail this test.
    response = server_error(RequestFactory().get("/"))
    html = response.content.decode()
    assert response.status_code == 500
    assert 'id="server-error"' in html and "Something went wrong on our side" in html
    assert "/static/css/app.css" in html and "/static/favicon.svg" in html


def test_every_page_links_the_favicon(client, alice):
    client.force_login(alice)
    assert '<link rel="icon" href="/static/favicon.svg"' in client.get(reverse("console")).content.decode()


# --- The list pages people try ---------------------------------------------------------------


def test_datasets_and_experiments_lead_to_the_console_lists(client, alice):
    client.force_login(alice)
    datasets = client.get("/datasets/")
    assert datasets.status_code == 302 and datasets["Location"] == "/#datasets"
    experiments = client.get("/experiments/?q=lenet")
    assert experiments.status_code == 302 and experiments["Location"] == "/?q=lenet#console-filter"


def test_the_console_lists_only_what_each_one_may_see(client, alice, bob, charlie, team):
    make_dataset(alice, name="alice private")
    shared = make_dataset(alice, name="alice team", visibility=Visibility.TEAM, team=team)
    make_experiment(alice, shared, name="alice team run", visibility=Visibility.TEAM, team=team)
    for user, seen, unseen in [
        (alice, ["alice private", "alice team", "alice team run"], []),
        (bob, ["alice team", "alice team run"], ["alice private"]),
        (charlie, [], ["alice private", "alice team", "alice team run"]),
    ]:
        client.force_login(user)
        html = client.get(client.get("/datasets/", follow=True).request["PATH_INFO"]).content.decode()
        assert all(name in html for name in seen), user
        assert not any(name in html for name in unseen), user


def test_the_evaluation_list_shows_only_visible_evaluations(client, alice, bob, charlie, team):
    private = make_evaluation(make_experiment(alice, name="private run"))
    shared = make_evaluation(make_experiment(alice, name="team run", visibility=Visibility.TEAM, team=team))
    for user, seen, unseen in [
        (alice, [private, shared], []),
        (bob, [shared], [private]),
        (charlie, [], [private, shared]),
    ]:
        client.force_login(user)
        response = client.get("/evaluations/")
        assert response.status_code == 200
        html = response.content.decode()
        assert all(e.get_absolute_url() in html for e in seen), user
        assert not any(e.get_absolute_url() in html for e in unseen), user
    assert "No evaluation yet." in html  # charlie's


def test_the_evaluation_list_is_paged(client, alice):
    experiment = make_experiment(alice)
    for _ in range(27):
        make_evaluation(experiment)
    client.force_login(alice)
    first = client.get("/evaluations/").content.decode()
    row = re.compile(r'href="/evaluations/\d+/"')
    assert len(row.findall(first)) == 25 and "1–25 of 27" in first and 'rel="next"' in first
    second = client.get("/evaluations/?page=2").content.decode()
    assert len(row.findall(second)) == 2


def test_the_network_library_is_paged_and_lists_only_visible_networks(client, alice, bob, charlie, team):
    for i in range(26):
        save_network(alice, name=f"net {i:02d}", visibility=Visibility.TEAM, team=team)
    save_network(alice, name="alice only")
    client.force_login(bob)
    html = client.get("/networks/").content.decode()
    assert "1–25 of 26" in html and "alice only" not in html
    client.force_login(charlie)
    assert "No saved network yet." in client.get("/networks/").content.decode()


def test_lists_need_a_login(client):
    for url in ["/datasets/", "/experiments/", "/evaluations/", "/networks/"]:
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], url


# --- Folder suggestions -------------------------------------------------------------------------


def test_folder_suggestions_are_dataset_folders_not_their_classes(tmp_path, settings, client, alice):
    image = png_bytes()
    write_tree(
        tmp_path,
        {
            "digits/train/0/a.png": image, "digits/train/1/a.png": image,
            "digits/val/0/a.png": image, "digits/val/1/a.png": image,
            "flowers/rose/a.png": image, "flowers/tulip/a.png": image,
            "notes/readme/words.txt": b"no images",
            "one-class/only/a.png": image,
            ".hidden/a/x.png": image, ".hidden/b/x.png": image,
        },
    )  # fmt: skip
    expected = [str(tmp_path / name) for name in ("digits/train", "digits/val", "flowers")]
    assert sources.dataset_folders([tmp_path]) == expected

    settings.DATA_IMPORT_ROOTS = [tmp_path]
    client.force_login(alice)
    html = client.get(reverse("dataset-new")).content.decode()
    datalist = html.split('<datalist id="folders">')[1].split("</datalist>")[0]
    assert all(f'value="{folder}"' in datalist for folder in expected)
    assert str(tmp_path / "digits/train/0") not in datalist and str(tmp_path / "flowers/rose") not in datalist


# --- The API token page --------------------------------------------------------------------------


def test_a_first_token_is_not_said_to_replace_an_old_one(client, alice):
    client.force_login(alice)
    html = client.post(reverse("api-token"), {"name": "first"}, follow=True).content.decode()
    assert "shown only this once" in html
    assert "old one" not in html and "no longer works" not in html and "other tokens" not in html

    html = client.post(reverse("api-token"), {"name": "second"}, follow=True).content.decode()
    assert "Your other tokens keep working until you revoke them." in html


def test_revoking_says_the_revoked_token_no_longer_works(client, alice):
    token = make_token(alice, "old script")
    client.force_login(alice)
    html = client.post(reverse("api-token-revoke", args=[token.pk]), follow=True).content.decode()
    assert "Token “old script” was revoked; it no longer works." in html


# --- Counts ----------------------------------------------------------------------------------------


def test_counts_on_the_dataset_page_have_thousands_separators(client, alice):
    dataset = make_dataset(alice, counts={"train": [27000, 27001], "val": [500, 500]})
    client.force_login(alice)
    html = client.get(dataset.get_absolute_url()).content.decode()
    assert "54,001" in html and "54001" not in html


# --- The network library ------------------------------------------------------------------------------


def test_a_saved_network_is_edited_and_renamed_by_its_owner(client, alice, team):
    saved = save_network(alice, visibility=Visibility.TEAM, team=team)
    client.force_login(alice)
    page = client.get(saved.get_absolute_url()).content.decode()
    assert 'id="network-form"' in page and f'href="/experiments/new/?saved={saved.pk}"' in page
    spec = SPEC.replace("flatten", "global_avg_pool")
    response = client.post(
        saved.get_absolute_url(),
        {"name": "renamed", "description": "smaller", "spec": spec, "visibility": "team", "team": team.pk},
    )
    assert response.status_code == 302
    saved.refresh_from_db()
    assert (saved.name, saved.description, saved.spec) == ("renamed", "smaller", spec.strip())


def test_a_bad_spec_is_refused_beside_its_field(client, alice):
    saved = save_network(alice)
    client.force_login(alice)
    response = client.post(saved.get_absolute_url(), {"name": "x", "spec": "layers: [", "visibility": "private"})
    assert response.status_code == 200
    assert "Not valid YAML" in response.content.decode()
    saved.refresh_from_db()
    assert saved.name == "tiny"


def test_a_team_member_views_but_does_not_change_a_saved_network(client, alice, bob, team):
    saved = save_network(alice, visibility=Visibility.TEAM, team=team)
    client.force_login(bob)
    page = client.get(saved.get_absolute_url())
    assert page.status_code == 200 and 'id="network-form"' not in page.content.decode()
    assert 'data-readonly="1"' in page.content.decode()
    response = client.post(saved.get_absolute_url(), {"name": "bob's now", "spec": SPEC, "visibility": "private"})
    assert response.status_code == 403
    saved.refresh_from_db()
    assert saved.name == "tiny"


def test_an_outsider_neither_sees_nor_changes_a_saved_network(client, alice, charlie, team):
    saved = save_network(alice, visibility=Visibility.TEAM, team=team)
    client.force_login(charlie)
    assert client.get(saved.get_absolute_url()).status_code == 404
    assert (
        client.post(saved.get_absolute_url(), {"name": "mine", "spec": SPEC, "visibility": "private"}).status_code
        == 404
    )
    assert client.get(reverse("network-spec"), {"saved": saved.pk}).status_code == 404
    saved.refresh_from_db()
    assert saved.name == "tiny"


def test_without_a_team_the_save_form_starts_private_and_offers_no_team(client, dave, alice):
    client.force_login(dave)
    html = client.get(reverse("network-list")).content.decode()
    assert '<option value="private" selected>' in html and '<option value="team"' not in html
    assert 'name="team"' not in html
    dialog = client.get(reverse("experiment-new")).content.decode().split('id="save-network-dialog"')[1]
    assert '<option value="private" selected>' in dialog and '<option value="team"' not in dialog

    client.force_login(alice)  # she has a team: it is offered, and chosen
    html = client.get(reverse("network-list")).content.decode()
    assert '<option value="team"' in html and 'name="team"' in html


def test_a_network_without_a_team_saves_private(client, dave):
    client.force_login(dave)
    response = client.post(
        reverse("network-list"), {"name": "mine", "spec": SPEC, "visibility": "private"}, HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 201
    assert SavedNetwork.objects.get(pk=response.json()["id"]).visibility == Visibility.PRIVATE


# --- Visualize's error carries its line --------------------------------------------------------------------


def test_a_layer_error_names_the_line_it_starts_on(client, alice):
    spec = standard_spec_text("lenet").replace("type: dense", "type: dnse", 1)
    line = next(i for i, text in enumerate(spec.splitlines(), 1) if "dnse" in text)
    client.force_login(alice)
    payload = {"network": "custom", "spec": spec}
    error = client.post(reverse("network-visualize"), json.dumps(payload), content_type="application/json").json()[
        "error"
    ]
    assert error["layer"] == "layers[5]" and error["line"] == line and "dnse" in error["message"]


def test_a_syntax_error_names_its_line_and_a_standard_network_none(client, alice):
    client.force_login(alice)
    visualize = reverse("network-visualize")
    payload = {"network": "custom", "spec": "layers:\n  - {type: flatten}\n  - {type: dense\n"}
    error = client.post(visualize, json.dumps(payload), content_type="application/json").json()["error"]
    assert error["layer"] is None and error["line"] == 4 and error["message"].startswith("Not valid YAML")
    small = {"network": "googlenet", "dataset": str(make_dataset(alice, width=8, height=8).pk)}
    error = client.post(visualize, json.dumps(small), content_type="application/json").json()["error"]
    assert error is not None and error["line"] is None


def test_error_line_follows_nested_paths_in_yaml_and_json():
    yaml_spec = (
        "layers:\n  - type: residual\n    layers:\n      - {type: conv, features: 8, kernel: 3}\n      - {type: nope}\n"
    )
    assert error_line(yaml_spec, "layers[0].layers[1]") == 5
    json_spec = '{"layers": [\n  {"type": "flatten"},\n  {"type": "nope"}\n]}'
    assert error_line(json_spec, "layers[1]") == 3
    assert error_line(json_spec, "layers[7]") is None


# --- The new-experiment page ---------------------------------------------------------------------------------


def test_the_new_experiment_page_has_no_inline_script_and_the_editor_parts(client, alice):
    client.force_login(alice)
    html = client.get(reverse("experiment-new")).content.decode()
    assert "<script>" not in html
    assert 'data-spec-url="/networks/spec/"' in html and 'data-save-url="/networks/"' in html
    assert "vendor/codemirror/codemirror.js" in html and 'id="sweep-count"' in html and 'data-max="16"' in html
    assert "window.prompt" not in html and '<dialog id="save-network-dialog"' in html


def test_resnet_has_one_name(client, alice):
    from training import config

    client.force_login(alice)
    html = client.get(reverse("experiment-new")).content.decode()
    assert ">ResNet-20<" in html and ">ResNet<" not in html
    assert config.network_title("resnet") == "ResNet-20"


def test_the_experiment_page_starts_its_script_from_data_attributes(client, alice):
    experiment = make_experiment(alice, epochs=7)
    client.force_login(alice)
    html = client.get(experiment.get_absolute_url()).content.decode()
    assert "<script>" not in html
    assert f'data-experiment="{experiment.pk}" data-status="done" data-epochs="7"' in html
