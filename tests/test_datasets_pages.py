"""The dataset pages, the gallery and its image URLs, settings, clone, delete, the preview and
the API, each for the one who may and the one who must be refused: alice owns and is her team's
admin, bob is a plain member of her team, charlie is outside it."""

import base64
import io
import shutil
import time

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from accounts.models import Visibility
from datasets import imaging, views
from datasets.grouping import group_by_team, grouped_choices
from datasets.models import Dataset
from tests.dataset_fixtures import *  # noqa: F403
from tests.dataset_fixtures import color_tree, png_bytes, write_tree, zip_of
from tests.factories import make_dataset, make_experiment, make_token


@pytest.fixture(autouse=True)
def _empty_data_root(empty_data_root):
    pass


def built(owner, folder, *, encoding="raw", **fields):
    """A dataset built from folder by the imaging core directly (no worker needed)."""
    dataset = make_dataset(owner, source_folder=str(folder), channels=3, width=16, height=16, **fields)
    result = imaging.build_dataset(
        folder, dataset.directory, width=16, height=16, channels=3, resize_mode="squash", val_percent=20,
        test_percent=20, encoding=encoding,
    )  # fmt: skip
    Dataset.objects.filter(pk=dataset.pk).update(
        classes=result.classes, counts=result.counts, stored_bytes=result.stored_bytes
    )
    dataset.log("[ 0.0 s] Done.")
    dataset.refresh_from_db()
    return dataset


@pytest.fixture
def team_dataset(alice, team, color_folder):
    return built(alice, color_folder, name="shapes", visibility=Visibility.TEAM, team=team)


def page_urls(dataset):
    return [
        reverse("dataset-detail", args=[dataset.pk]),
        reverse("dataset-explore", args=[dataset.pk]),
        reverse("dataset-explore", args=[dataset.pk]) + "?split=val&class=1",
        reverse("dataset-image", args=[dataset.pk, "train", 0]),
        reverse("dataset-image", args=[dataset.pk, "test", 1]),
        reverse("dataset-mean", args=[dataset.pk]),
        reverse("dataset-clone", args=[dataset.pk]),
    ]


def test_owner_and_team_member_see_every_page_and_image(client, alice, bob, team_dataset):
    for user in (alice, bob):
        client.force_login(user)
        for url in page_urls(team_dataset):
            assert client.get(url).status_code == 200, (user, url)


def test_an_outsider_gets_404_for_every_page_and_thumbnail(client, charlie, team_dataset):
    client.force_login(charlie)
    for url in page_urls(team_dataset):
        assert client.get(url).status_code == 404, url
    for action in ("dataset-settings", "dataset-delete"):
        assert client.post(reverse(action, args=[team_dataset.pk]), {"name": "mine"}).status_code == 404
    console = client.get(reverse("console")).content.decode()
    assert team_dataset.name not in console


def test_anonymous_visitors_are_sent_to_log_in(client, team_dataset):
    for url in page_urls(team_dataset) + [reverse("dataset-preview")]:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login")), url


def test_the_dataset_page_shows_what_the_build_made(client, alice, team_dataset):
    client.force_login(alice)
    page = client.get(team_dataset.get_absolute_url()).content.decode()
    expected = ["16×16 color", "Raw pixels", 'id="chart-train"', 'id="chart-val"', 'id="chart-test"',
                "Mean image", "Build log", "Explore the images", "Clone with other options"]  # fmt: skip
    for text in expected:
        assert text in page, text
    distribution = client.get(team_dataset.get_absolute_url()).context["dataset"].distribution()
    assert [s["split"] for s in distribution["splits"]] == ["train", "val", "test"]
    assert distribution["classes"] == ["blue", "green", "red"]


def test_the_gallery_filters_by_split_and_class_and_pages(client, alice, color_folder, monkeypatch):
    big = built(alice, color_folder)
    client.force_login(alice)
    labels = np.load(big.directory / "train_labels.npy")
    response = client.get(reverse("dataset-explore", args=[big.pk]) + "?split=train&class=2")
    shown = response.context["images"]
    assert [index for index, _ in shown] == np.flatnonzero(labels == 2).tolist()
    assert {label for _, label in shown} == {"red"}

    monkeypatch.setattr(views, "GALLERY_PAGE_SIZE", 4)
    first = client.get(reverse("dataset-explore", args=[big.pk]))
    second = client.get(reverse("dataset-explore", args=[big.pk]) + "?page=2")
    assert [i for i, _ in first.context["images"]] == [0, 1, 2, 3]
    assert [i for i, _ in second.context["images"]] == [4, 5, 6, 7]
    assert 'id="next-page"' in first.content.decode()


def test_a_thumbnail_is_the_stored_image(client, alice, team_dataset):
    client.force_login(alice)
    response = client.get(reverse("dataset-image", args=[team_dataset.pk, "val", 2]))
    assert response["Content-Type"] == "image/png" and "private" in response["Cache-Control"]
    pixels = np.asarray(Image.open(io.BytesIO(response.content)))
    np.testing.assert_array_equal(pixels, np.load(team_dataset.directory / "val_images.npy")[2])
    for split, index in (("val", 999), ("nope", 0), ("train", -1)):
        assert client.get(f"/datasets/{team_dataset.pk}/images/{split}/{index}.png").status_code == 404


def test_png_stored_thumbnails_are_served_as_stored(client, alice, color_folder):
    dataset = make_dataset(alice, source_folder=str(color_folder), encoding="png", width=16, height=16, channels=3)
    imaging.build_dataset(
        color_folder, dataset.directory, width=16, height=16, channels=3, resize_mode="crop", val_percent=0,
        encoding="png",
    )  # fmt: skip
    client.force_login(alice)
    stored = imaging.StoredSplit(dataset.directory, "train")
    assert client.get(reverse("dataset-image", args=[dataset.pk, "train", 5])).content == stored.png(5)
    page = client.get(dataset.get_absolute_url()).content.decode()
    assert "Train a network on it" not in page and "clone it as raw to train" in page


def test_the_mean_image_is_the_training_mean(client, bob, team_dataset):
    client.force_login(bob)
    mean = np.asarray(Image.open(io.BytesIO(client.get(reverse("dataset-mean", args=[team_dataset.pk])).content)))
    expected = np.load(team_dataset.directory / "train_images.npy").mean(axis=0)
    assert np.abs(mean.astype(float) - expected).max() <= 0.5


# --- Changing: only the owner and the team's admins ----------------------------------------------


def test_a_team_member_may_look_but_not_change(client, bob, team_dataset):
    client.force_login(bob)
    response = client.post(reverse("dataset-settings", args=[team_dataset.pk]), {"name": "bob's now"})
    assert response.status_code == 403
    assert client.post(reverse("dataset-delete", args=[team_dataset.pk])).status_code == 403
    team_dataset.refresh_from_db()
    assert team_dataset.name == "shapes"
    settings_form = f'action="{reverse("dataset-settings", args=[team_dataset.pk])}"'
    assert settings_form not in client.get(team_dataset.get_absolute_url()).content.decode()


def test_a_team_admin_renames_and_reshares_a_members_dataset(client, alice, bob, team, color_folder):
    dataset = built(bob, color_folder, name="bob's shapes", visibility=Visibility.TEAM, team=team)
    client.force_login(alice)
    response = client.post(
        reverse("dataset-settings", args=[dataset.pk]),
        {"name": "shapes v2", "visibility": "organisation", "team": team.pk},
    )
    assert response.status_code == 302
    dataset.refresh_from_db()
    assert (dataset.name, dataset.visibility, dataset.owner) == ("shapes v2", "organisation", bob)


def test_settings_explain_a_team_visibility_without_a_team(client, alice, team_dataset):
    client.force_login(alice)
    response = client.post(reverse("dataset-settings", args=[team_dataset.pk]), {"name": "x", "visibility": "team"})
    assert response.status_code == 200
    assert "Choose the team that may see it" in response.content.decode()


def test_delete_is_refused_while_experiments_use_it_and_names_them(client, alice, bob, team, color_folder):
    dataset = built(alice, color_folder, visibility=Visibility.ORGANISATION, team=team)
    make_experiment(alice, dataset, name="alice lenet", visibility=Visibility.TEAM, team=team)
    make_experiment(bob, dataset, name="bob's secret run")  # private: alice may not learn its name
    client.force_login(alice)

    page = client.get(dataset.get_absolute_url()).content.decode()
    assert "It cannot be deleted while experiments use it" in page and "alice lenet" in page
    response = client.post(reverse("dataset-delete", args=[dataset.pk]), follow=True)
    message = "This dataset is used by experiments (“alice lenet”, 1 you cannot see); delete those first."
    assert message in response.content.decode()
    assert "bob's secret run" not in response.content.decode()
    assert Dataset.objects.filter(pk=dataset.pk).exists() and dataset.directory.exists()


def test_delete_removes_the_files_and_the_uploads(client, alice, color_folder):
    dataset = built(alice, color_folder)
    (dataset.upload_dir / "images").mkdir(parents=True)
    client.force_login(alice)
    client.post(reverse("dataset-delete", args=[dataset.pk]))
    assert not Dataset.objects.filter(pk=dataset.pk).exists()
    assert not dataset.directory.exists() and not dataset.upload_dir.exists()


# --- Clone ------------------------------------------------------------------------------------


def test_the_clone_form_starts_from_the_original(client, bob, team_dataset):
    client.force_login(bob)
    form = client.get(reverse("dataset-clone", args=[team_dataset.pk])).context["form"]
    assert form["name"].value() == "shapes (copy)"
    assert form["source_folder"].value() == team_dataset.source_folder
    assert form["clone_of"].value() == team_dataset.pk


@pytest.mark.django_db(transaction=True)
def test_a_team_member_clones_an_uploaded_archive_with_other_options(client, alice, bob, team, worker):
    client.force_login(alice)
    archive = SimpleUploadedFile("shapes.zip", zip_of(color_tree()))
    client.post(
        reverse("dataset-new"),
        {"name": "shapes", "source_type": "archive", "archive": archive, "width": 16, "height": 16, "channels": 3,
         "val_percent": 0, "visibility": "team", "team": team.pk},
    )  # fmt: skip
    worker("datasets")
    original = Dataset.objects.get()
    assert original.status == Dataset.Status.DONE, original.error

    client.force_login(bob)
    response = client.post(
        reverse("dataset-clone", args=[original.pk]),
        {"name": "bigger", "source_type": "archive", "clone_of": original.pk, "width": 32, "height": 24,
         "channels": 1, "resize_mode": "crop", "val_percent": 20, "visibility": "private"},
    )  # fmt: skip
    assert response.status_code == 302, response.context["form"].errors
    clone = Dataset.objects.get(name="bigger")
    assert (clone.owner, clone.cloned_from) == (bob, original)
    # The clone has its own (hard-linked) copy of the images: deleting the original leaves them.
    shutil.rmtree(original.upload_dir)
    worker("datasets")
    clone.refresh_from_db()
    assert clone.status == Dataset.Status.DONE, clone.error
    assert np.load(clone.directory / "train_images.npy").shape[1:] == (24, 32, 1)
    assert clone.val_count == 3  # 20% of 6 per class


def test_an_outsider_cannot_clone_by_posting_an_id(client, charlie, team_dataset):
    client.force_login(charlie)
    response = client.post(
        reverse("dataset-new"),
        {"name": "stolen", "source_type": "archive", "clone_of": team_dataset.pk, "width": 16, "height": 16,
         "channels": 3, "val_percent": 0, "visibility": "private"},
    )  # fmt: skip
    assert "The dataset to clone does not exist." in response.context["form"].errors["clone_of"]
    assert not Dataset.objects.filter(name="stolen").exists()


# --- The live preview -------------------------------------------------------------------------


def test_the_preview_shows_every_resize_mode_of_the_first_image(client, alice, color_folder):
    client.force_login(alice)
    response = client.get(
        reverse("dataset-preview"), {"folder": str(color_folder), "width": 20, "height": 10, "channels": 3}
    )
    data = response.json()
    assert response.status_code == 200 and data["name"] == "blue/000.png"
    assert sorted(data["modes"]) == ["crop", "fill", "half_crop", "squash"]
    for uri in data["modes"].values():
        png = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert png.size == (20, 10)


def test_the_preview_takes_an_image_of_the_users(client, alice):
    client.force_login(alice)
    image = SimpleUploadedFile("mine.png", png_bytes(200, size=(30, 10)))
    data = client.post(reverse("dataset-preview"), {"image": image, "width": 8, "height": 8, "channels": 1}).json()
    assert data["name"] == "mine.png" and len(data["modes"]) == 4


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"folder": "/etc"}, "outside the import folders"),
        ({"folder": "../../"}, "outside the import folders"),
        ({"folder": "no-such-folder"}, "No image found"),
        ({"folder": "mnist", "width": 0}, "Width and height must be 1 to 1024"),
    ],
)
def test_the_preview_follows_the_import_rule(client, alice, params, message):
    client.force_login(alice)
    response = client.get(reverse("dataset-preview"), {"width": 8, "height": 8, "channels": 1} | params)
    assert response.status_code == 400 and message in response.json()["error"]


def test_the_preview_of_a_clone_source_asks_the_visibility_rule(client, alice, charlie, settings):
    hidden = make_dataset(alice, source_type="archive")
    write_tree(hidden.extracted_dir, {"cats/1.png": png_bytes(), "dogs/1.png": png_bytes()})
    client.force_login(charlie)
    params = {"clone_of": hidden.pk, "width": 8, "height": 8, "channels": 1}
    assert client.get(reverse("dataset-preview"), params).status_code == 400
    client.force_login(alice)
    assert client.get(reverse("dataset-preview"), params).json()["name"] == "cats/1.png"


# --- Sharing: the console and the experiment form group datasets by team --------------------------


def test_the_console_groups_datasets_by_team(client, alice, bob, team):
    make_dataset(alice, name="my private one")
    make_dataset(bob, name="team digits", visibility=Visibility.TEAM, team=team)
    make_dataset(bob, name="everyone's digits", visibility=Visibility.ORGANISATION)
    client.force_login(alice)
    page = client.get(reverse("console")).content.decode()
    order = [page.index(text) for text in ("Private", "my private one", "Vision", "team digits", "Organisation",
                                           "everyone&#x27;s digits")]  # fmt: skip
    assert order == sorted(order)


def test_grouped_choices_for_the_experiment_form(alice, bob, team):
    mine = make_dataset(alice, name="mine")
    shared = make_dataset(bob, name="shared", visibility=Visibility.TEAM, team=team)
    datasets = Dataset.objects.visible_to(alice).select_related("team")
    assert grouped_choices(datasets) == [("Private", [(mine.pk, "mine")]), ("Vision", [(shared.pk, "shared")])]
    assert [label for label, _ in group_by_team(Dataset.objects.visible_to(bob))] == ["Vision"]


def test_trainable_means_built_as_raw(alice):
    raw = make_dataset(alice)
    make_dataset(alice, encoding="png")
    make_dataset(alice, status=Dataset.Status.RUNNING)
    assert list(Dataset.objects.trainable()) == [raw]


# --- API ----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_api_takes_an_archive_as_multipart(client, alice, charlie, worker, settings):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # as for a large archive: Django spools it to a temporary file
    token = make_token(alice)
    response = client.post(
        "/api/datasets/",
        {"name": "api shapes", "source_type": "archive", "archive": SimpleUploadedFile("s.zip", zip_of(color_tree())),
         "width": 16, "height": 16, "channels": 3, "val_percent": 0},
        HTTP_AUTHORIZATION=f"Token {token.key}",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    assert response.json()["source_type"] == "archive" and response.json()["archive_name"] == "s.zip"
    worker("datasets")
    detail = client.get(f"/api/datasets/{response.json()['id']}/", HTTP_AUTHORIZATION=f"Token {token.key}").json()
    assert detail["status"] == "done" and detail["counts"]["train"] == [6, 6, 6]
    outsider = make_token(charlie)
    assert client.get(f"/api/datasets/{detail['id']}/", HTTP_AUTHORIZATION=f"Token {outsider.key}").status_code == 404


def test_the_api_refuses_a_bad_archive_like_the_form(client, alice):
    token = make_token(alice)
    response = client.post(
        "/api/datasets/",
        {"name": "x", "source_type": "archive", "archive": SimpleUploadedFile("x.zip", b"not a zip at all"),
         "width": 16, "height": 16},
        HTTP_AUTHORIZATION=f"Token {token.key}",
    )  # fmt: skip
    assert response.status_code == 400
    assert "not a .zip or .tar.gz archive" in response.json()["errors"]["archive"][0]


# --- A lost job, and what training reads -----------------------------------------------------------


def test_a_hundred_thousand_image_dataset_opens_for_training_in_under_a_second(alice):
    from training.jobs import load_arrays

    dataset = make_dataset(alice, classes=[str(d) for d in range(10)])
    dataset.directory.mkdir(parents=True)
    for split, count in (("train", 100_000), ("val", 10_000)):
        images = np.lib.format.open_memmap(
            dataset.directory / f"{split}_images.npy", "w+", np.uint8, (count, 28, 28, 1)
        )
        images[::997] = 200  # a few pages with data; the rest stays sparse on disk
        del images
        np.save(dataset.directory / f"{split}_labels.npy", np.arange(count, dtype=np.int32) % 10)
    np.save(dataset.directory / "mean.npy", np.zeros((28, 28, 1), np.float32))

    started = time.perf_counter()
    data = load_arrays(dataset)
    batch = np.asarray(data.train_x[np.sort(np.random.default_rng(0).choice(100_000, 128, replace=False))])
    seconds = time.perf_counter() - started
    assert seconds < 1.0, seconds
    assert data.train_x.shape == (100_000, 28, 28, 1) and batch.shape == (128, 28, 28, 1)
