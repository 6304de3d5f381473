"""The JSON API as a script author meets it: the index, the schema and its docs, paged and
filtered lists, one error shape, the page's defaults, the logs."""

import json

import pytest
from django.contrib.staticfiles import finders

from accounts.models import Team, Visibility
from datasets.models import Dataset
from tests.factories import make_dataset, make_experiment, make_token
from training.models import Experiment, Snapshot


@pytest.fixture
def api(client, alice):
    client.defaults["HTTP_AUTHORIZATION"] = f"Token {make_token(alice).key}"
    return client


def post_json(client, url, body):
    return client.post(url, json.dumps(body), content_type="application/json")


# --- index, schema, docs --------------------------------------------------------------------


def test_the_index_links_every_list_the_schema_and_the_docs(api):
    index = api.get("/api/").json()
    assert index["datasets"] == "http://testserver/api/datasets/"
    assert index["experiments"] == "http://testserver/api/experiments/"
    assert index["schema"] == "http://testserver/api/schema/"
    assert index["docs"] == "http://testserver/api/docs/"
    assert api.get(index["datasets"]).status_code == 200


def test_the_schema_documents_every_endpoint_its_fields_and_errors(api):
    response = api.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    for path in [
        "/api/datasets/", "/api/datasets/{id}/", "/api/datasets/{id}/log/", "/api/experiments/",
        "/api/experiments/{id}/", "/api/experiments/{id}/log/", "/api/experiments/{id}/abort/",
        "/api/experiments/{id}/resume/", "/api/experiments/{id}/classify/",
    ]:  # fmt: skip
        assert path in paths, sorted(paths)
    components = schema["components"]["schemas"]
    # The request bodies name the page's fields with its defaults.
    dataset_body = components["NewDatasetRequest"]["properties"]
    assert dataset_body["width"]["default"] == 28 and dataset_body["shuffle"]["default"] is True
    experiment_body = components["NewExperimentRequest"]["properties"]
    assert "learning_rate" in experiment_body and "learning_rates" not in experiment_body
    assert {"type": "array", "items": {"type": "number"}, "minItems": 1} in experiment_body["learning_rate"]["oneOf"]
    assert sorted(components["NewExperimentRequest"]["required"]) == ["dataset", "name"]
    # Every error is one shape, documented on the operations that answer it.
    assert set(components["Error"]["properties"]) == {"detail", "errors"}
    abort = paths["/api/experiments/{id}/abort/"]["post"]["responses"]
    assert abort["409"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    listing = paths["/api/experiments/"]["get"]
    assert {"400", "401"} <= set(listing["responses"])
    assert {p["name"] for p in listing["parameters"]} >= {"status", "owner", "team", "dataset", "network", "search",
                                                           "ordering", "limit", "offset"}  # fmt: skip
    assert "count" in components["PaginatedExperimentList"]["properties"]
    classify = paths["/api/experiments/{id}/classify/"]["post"]["requestBody"]["content"]
    assert classify["multipart/form-data"]["schema"] == {"$ref": "#/components/schemas/ClassifyRequest"}


def test_the_docs_are_served_from_the_platforms_own_files(client, alice):
    assert client.get("/api/docs/").status_code == 302  # a page: log in first
    client.force_login(alice)
    for url in ["/api/docs/", "/api/docs/?script"]:
        page = client.get(url).content.decode()
        assert "cdn" not in page.lower() and "https://" not in page, url
        assert url.endswith("?script") or "/static/drf_spectacular_sidecar/" in page, url
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")  # collected with the rest


# --- lists: pages, filters, queries ------------------------------------------------------------


def test_a_list_is_paged_with_its_total(api, alice):
    for n in range(5):
        make_dataset(alice, name=f"set {n}")
    page = api.get("/api/datasets/", {"limit": 2, "offset": 2}).json()
    assert page["count"] == 5
    assert [d["name"] for d in page["results"]] == ["set 2", "set 1"]
    assert "offset=4" in page["next"] and page["previous"]


def test_lists_filter_by_status_owner_team_dataset_network_and_name(api, alice, bob, team):
    other_team = Team.objects.create(name="Other")
    mine = make_dataset(alice, name="digits")
    shared = make_dataset(bob, name="faces", visibility=Visibility.TEAM, team=team)
    make_dataset(alice, name="queued", status=Dataset.Status.QUEUED, team=other_team)
    lenet = make_experiment(alice, mine, name="lenet digits")
    alexnet = make_experiment(alice, mine, name="alexnet digits", network="alexnet", status=Experiment.Status.RUNNING)
    on_faces = make_experiment(bob, shared, name="faces run", visibility=Visibility.TEAM, team=team)

    def names(url, **params):
        response = api.get(url, params)
        assert response.status_code == 200, response.json()
        return [row["name"] for row in response.json()["results"]]

    assert names("/api/datasets/", status="done", ordering="name") == ["digits", "faces"]
    assert names("/api/datasets/", owner="bob") == ["faces"]
    assert names("/api/datasets/", team="Other") == ["queued"]
    assert names("/api/datasets/", search="DIG") == ["digits"]
    assert names("/api/experiments/", dataset=mine.pk, ordering="-name") == [lenet.name, alexnet.name]
    assert names("/api/experiments/", network="alexnet") == [alexnet.name]
    assert names("/api/experiments/", status="running") == [alexnet.name]
    assert names("/api/experiments/", team=team.name, owner="bob") == [on_faces.name]
    assert names("/api/experiments/", ordering="created") == [lenet.name, alexnet.name, on_faces.name]


def test_a_wrong_filter_says_what_is_valid(api):
    response = api.get("/api/experiments/", {"network": "LeNet", "ordering": "size", "dataset": "x"})
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert errors["network"] == ["“LeNet” is not a network here. Valid: lenet, alexnet, googlenet, resnet, custom."]
    assert errors["ordering"] == ["Order by one of: created, -created, name, -name."]
    assert errors["dataset"] == ["Give the dataset's id, a whole number."]


@pytest.mark.parametrize("rows", [10, 200])
def test_a_page_costs_the_same_queries_whatever_its_length(api, alice, bob, team, rows,
                                                           django_assert_max_num_queries):  # fmt: skip
    source = make_dataset(bob, visibility=Visibility.TEAM, team=team)
    datasets = Dataset.objects.bulk_create(
        Dataset(owner=alice, team=team, name=f"clone {n}", cloned_from=source, status="done") for n in range(rows)
    )
    experiments = Experiment.objects.bulk_create(
        Experiment(owner=alice, team=team, name=f"run {n}", dataset=datasets[n]) for n in range(rows)
    )
    Snapshot.objects.bulk_create(Snapshot(experiment=e, epoch=1, path="/x") for e in experiments)
    for url in ["/api/datasets/", "/api/experiments/"]:
        with django_assert_max_num_queries(6):
            page = api.get(url, {"limit": rows, "owner": "alice"}).json()
        assert page["count"] == rows and len(page["results"]) == rows


# --- one error shape ----------------------------------------------------------------------------


def test_every_error_has_one_shape(api, alice, charlie):
    dataset = make_dataset(alice)
    experiment = make_experiment(alice, dataset)
    field_error = post_json(api, "/api/experiments/", {"name": "x", "dataset": dataset.pk, "network": "LeNet"})
    assert field_error.status_code == 400
    assert field_error.json()["errors"] == {
        "network": ["Select a valid choice. LeNet is not one of the available choices. "
                    "Valid: lenet, alexnet, googlenet, resnet, custom."]
    }  # fmt: skip
    assert field_error.json()["detail"].startswith("network: Select a valid choice.")
    not_found = api.get("/api/experiments/999999/")
    assert not_found.status_code == 404
    assert not_found.json() == {"detail": "No experiment matches the given query.", "errors": {}}
    bad_json = api.post("/api/datasets/", "{not json", content_type="application/json")
    assert bad_json.status_code == 400 and bad_json.json()["errors"] == {} and "JSON" in bad_json.json()["detail"]
    del api.defaults["HTTP_AUTHORIZATION"]
    anonymous = api.get("/api/datasets/")
    assert anonymous.status_code == 401
    assert set(anonymous.json()) == {"detail", "errors"}
    api.defaults["HTTP_AUTHORIZATION"] = f"Token {make_token(charlie).key}"
    assert api.patch(f"/api/experiments/{experiment.pk}/", {}, content_type="application/json").json()["errors"] == {}


def test_aborting_an_experiment_that_ended_says_so(api, alice):
    experiment = make_experiment(alice, status=Experiment.Status.DONE)
    response = api.post(f"/api/experiments/{experiment.pk}/abort/")
    assert response.status_code == 409
    assert response.json() == {"detail": "This experiment is not running: it is done.", "errors": {}}
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.DONE and not experiment.abort_requested


# --- the page's defaults and one name per field ---------------------------------------------------


def test_a_dataset_left_with_only_its_folder_takes_the_pages_defaults(api, mnist_root):
    response = post_json(api, "/api/datasets/", {"name": "digits", "source_folder": str(mnist_root / "train")})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["width"], body["height"], body["shuffle"], body["val_percent"]) == (28, 28, True, 25)
    refused = post_json(api, "/api/datasets/", {"name": "digits", "source_folder": str(mnist_root / "train"),
                                                "widht": 32})  # fmt: skip
    assert refused.status_code == 400
    assert refused.json()["errors"] == {"widht": ["Not a field here. Did you mean width?"]}


def test_a_clone_takes_the_originals_settings(api, alice, mnist_root):
    source = make_dataset(alice, source_folder=str(mnist_root / "train"), width=16, height=12, shuffle=False)
    response = post_json(api, "/api/datasets/", {"name": "again", "clone_of": source.pk})
    assert response.status_code == 201, response.json()
    assert (response.json()["width"], response.json()["height"], response.json()["shuffle"]) == (16, 12, False)


def test_learning_rate_is_the_one_name_and_carries_its_errors(api, alice):
    dataset = make_dataset(alice)
    refused = post_json(api, "/api/experiments/", {"name": "x", "dataset": dataset.pk, "learning_rate": [0.1, -1]})
    assert refused.status_code == 400
    assert refused.json()["errors"] == {"learning_rate": ["The learning rate must be a number greater than 0."]}
    plural = post_json(api, "/api/experiments/", {"name": "x", "dataset": dataset.pk, "learning_rates": 0.1})
    assert plural.json()["errors"] == {"learning_rates": ["Not a field here. Did you mean learning_rate?"]}
    assert not Experiment.objects.exists()


# --- logs ---------------------------------------------------------------------------------------


def test_the_build_and_training_logs_are_paged(api, alice, charlie):
    experiment = make_experiment(alice)
    for n in range(3):
        experiment.dataset.log(f"build line {n}", send=False)
        experiment.log(f"train line {n}", level="warning" if n == 2 else "info", send=False)
    build = api.get(f"/api/datasets/{experiment.dataset.pk}/log/", {"limit": 2}).json()
    assert build["count"] == 3 and [line["message"] for line in build["results"]] == ["build line 0", "build line 1"]
    training = api.get(f"/api/experiments/{experiment.pk}/log/", {"offset": 2}).json()
    assert training["results"][0]["message"] == "train line 2" and training["results"][0]["level"] == "warning"
    assert set(training["results"][0]) == {"level", "message", "time"}
    api.defaults["HTTP_AUTHORIZATION"] = f"Token {make_token(charlie).key}"
    assert api.get(f"/api/experiments/{experiment.pk}/log/").status_code == 404


def test_a_path_longer_than_the_filesystem_takes_is_refused_on_its_field(api, mnist_root):
    response = post_json(api, "/api/datasets/", {"name": "long", "source_folder": "0" * 1000})
    assert response.status_code == 400
    assert response.json()["errors"]["source_folder"] == ["This path cannot be used: File name too long."]
