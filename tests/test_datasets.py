"""Creating datasets from folders: the form's checks, and real builds by a real worker."""

import shutil

import numpy as np
import pytest
from django.urls import reverse

from datasets.models import Dataset


def form_data(folder, **overrides):
    data = {
        "name": "digits", "source_folder": str(folder), "channels": 1, "width": 28, "height": 28,
        "resize_mode": "squash", "val_percent": 20, "visibility": "private",
    }  # fmt: skip
    return {**data, **overrides}


@pytest.fixture
def digits_with_bad_files(mnist_root, settings):
    """Three classes of real MNIST digits plus files no build should choke on."""
    root = settings.DATA_IMPORT_ROOTS[0] / "digits-bad"
    shutil.rmtree(root, ignore_errors=True)
    for digit in "012":
        shutil.copytree(mnist_root / "train" / digit, root / digit)
    (root / "0" / "notes.png").write_text("this is not an image")
    good = next((root / "1").glob("*.png")).read_bytes()
    (root / "1" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "2" / "empty.jpg").write_bytes(b"")
    return root


@pytest.mark.django_db(transaction=True)
def test_build_on_real_mnist_skips_and_reports_bad_files(client, alice, digits_with_bad_files, worker):
    client.force_login(alice)
    response = client.post(reverse("dataset-new"), form_data(digits_with_bad_files))
    dataset = Dataset.objects.get()
    assert response.status_code == 302
    assert dataset.status == Dataset.Status.QUEUED

    worker("datasets")

    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.DONE, dataset.error
    assert dataset.classes == ["0", "1", "2"]
    good_per_class = [len(list((digits_with_bad_files / d).glob("*.png"))) for d in "012"]
    good_per_class[0] -= 1  # notes.png
    good_per_class[1] -= 1  # truncated.png
    assert [t + v for t, v in zip(dataset.counts["train"], dataset.counts["val"], strict=True)] == good_per_class
    assert all(v > 0 for v in dataset.counts["val"])
    assert sorted(path for path, _ in dataset.skipped) == ["0/notes.png", "1/truncated.png", "2/empty.jpg"]

    images = np.load(dataset.directory / "train_images.npy", mmap_mode="r")
    labels = np.load(dataset.directory / "train_labels.npy")
    assert images.shape == (dataset.train_count, 28, 28, 1)
    assert images.dtype == np.uint8
    assert sorted(set(labels.tolist())) == [0, 1, 2]

    page = client.get(dataset.get_absolute_url()).content.decode()
    assert "truncated.png" in page
    assert "Train a network on it" in page


@pytest.mark.django_db(transaction=True)
def test_a_build_with_no_usable_image_fails_with_a_reason(client, alice, settings, worker):
    root = settings.DATA_IMPORT_ROOTS[0] / "all-bad"
    shutil.rmtree(root, ignore_errors=True)
    for name in ("cats", "dogs"):
        (root / name).mkdir(parents=True)
        for i in range(3):
            (root / name / f"{i}.png").write_text("not a picture")
    client.force_login(alice)
    client.post(reverse("dataset-new"), form_data(root, val_percent=0))

    worker("datasets")

    dataset = Dataset.objects.get()
    assert dataset.status == Dataset.Status.FAILED
    assert dataset.error
    assert not dataset.directory.exists()
    assert dataset.error in client.get(dataset.get_absolute_url()).content.decode()


def test_a_build_claims_its_row_once(alice, mnist_root):
    from datasets import jobs
    from tests.factories import make_dataset

    dataset = make_dataset(alice, status=Dataset.Status.RUNNING, source_folder=str(mnist_root / "train"))
    jobs.build(dataset.pk)  # another run holds it: nothing happens
    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.RUNNING
    assert not dataset.directory.exists()


@pytest.mark.parametrize(
    ("folder", "overrides", "field", "message"),
    [
        ("/etc", {}, "source_folder", "outside the import folders"),
        ("../../..", {}, "source_folder", "outside the import folders"),
        ("no-such-folder", {}, "source_folder", "does not exist"),
        ("mnist/train", {"width": 0}, "width", "between 1 and"),
        ("mnist/train", {"height": -5}, "height", "greater than or equal to 0"),
        ("mnist/train", {"val_percent": 95}, "val_percent", "between 0 and 90"),
    ],
)
def test_the_form_explains_bad_input(client, alice, mnist_root, folder, overrides, field, message):
    client.force_login(alice)
    response = client.post(reverse("dataset-new"), form_data(folder, **overrides))
    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors[field])
    assert not Dataset.objects.exists()


def test_the_form_names_an_empty_class_folder(client, alice, mnist_root, settings):
    root = settings.DATA_IMPORT_ROOTS[0] / "one-empty"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(mnist_root / "train" / "7", root / "seven")
    (root / "nothing").mkdir()
    client.force_login(alice)
    response = client.post(reverse("dataset-new"), form_data(root))
    assert "nothing" in " ".join(response.context["form"].errors["source_folder"])


def test_a_symlink_out_of_the_import_root_is_refused(client, alice, mnist_root, settings, tmp_path):
    link = settings.DATA_IMPORT_ROOTS[0] / "sneaky"
    link.unlink(missing_ok=True)
    link.symlink_to(tmp_path)
    client.force_login(alice)
    response = client.post(reverse("dataset-new"), form_data(link))
    assert "outside the import folders" in " ".join(response.context["form"].errors["source_folder"])
