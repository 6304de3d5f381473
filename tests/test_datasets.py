"""Creating datasets from every source: the form's checks, and real builds by real workers."""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from datasets import imaging
from datasets.models import Dataset
from tests.conftest import ROOT, subprocess_env
from tests.dataset_fixtures import *  # noqa: F403
from tests.dataset_fixtures import COLORS, color_tree, png_bytes, tar_of, write_tree, zip_of


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


def test_a_build_claims_its_row_once(alice, mnist_root, empty_data_root):
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


# --- Every source, through the form, built by one real worker -----------------------------------


def upload(name, data):
    return SimpleUploadedFile(name, data)


@pytest.mark.django_db(transaction=True)
def test_every_source_and_option_builds(client, alice, mnist_root, color_folder, fresh_folder, worker, settings):
    data_root = Path(settings.DATA_ROOT)
    before = {name: listing(data_root / name) for name in ("datasets", "uploads")}
    client.force_login(alice)
    # A server folder with a validation folder of its own and a test split carved from training.
    folders = client.post(
        reverse("dataset-new"),
        form_data(mnist_root / "train", name="folders", val_folder="mnist/test", test_percent=10, shuffle="on"),
    )
    # An archive of color images in one enclosing folder, stored as PNG.
    archive = client.post(
        reverse("dataset-new"),
        form_data(
            "", name="archive", source_type="archive", channels=3, width=24, height=24, resize_mode="fill",
            val_percent=20, test_percent=20, max_per_class=5, encoding="png",
            archive=upload("shapes.zip", zip_of(color_tree(prefix="shapes/") | {"shapes/README.txt": b"hi"})),
        ),
    )  # fmt: skip
    # Uploaded lists with Windows line ends, a UTF-8 file name and a repeated line.
    (color_folder / "red" / "000.png").rename(color_folder / "red" / "été.png")
    train_lines = ["red/été.png 0"] + [
        f"{c}/{i:03d}.{'jpg' if i % 3 == 2 else 'png'} {c}" for c in COLORS for i in (1, 2, 3)
    ]
    train_lines.append(train_lines[1])
    val_list = fresh_folder("lists") / "val.txt"
    val_list.write_text("".join(f"{c}/004.png {n}\n" for n, c in enumerate(COLORS)), encoding="utf-8")
    lists = client.post(
        reverse("dataset-new"),
        form_data(
            "", name="lists", source_type="lists", list_prefix=str(color_folder), val_list=str(val_list),
            labels_upload=upload("labels.txt", b"red\r\ngreen\r\nblue\r\n"),
            train_list_upload=upload("train.txt", "\r\n".join(train_lines).encode()),
        ),
    )  # fmt: skip
    assert [r.status_code for r in (folders, archive, lists)] == [302, 302, 302], [
        r.context["form"].errors for r in (folders, archive, lists) if r.status_code != 302
    ]

    worker("datasets")

    by_name = {d.name: d for d in Dataset.objects.all()}
    for dataset in by_name.values():
        assert dataset.status == Dataset.Status.DONE, (dataset.name, dataset.error)

    folders = by_name["folders"]
    assert folders.val_count == 1000 and 80 <= folders.test_count <= 120
    assert folders.train_count + folders.test_count == 1000
    labels = np.load(folders.directory / "train_labels.npy")
    assert labels.tolist() != sorted(labels.tolist())  # shuffled
    assert np.load(folders.directory / "test_images.npy", mmap_mode="r").shape == (folders.test_count, 28, 28, 1)
    assert "Found 10 classes and 2,000 images" in folders.log_text

    archive = by_name["archive"]
    assert archive.classes == ["blue", "green", "red"]
    assert archive.counts == {"train": [3, 3, 3], "val": [1, 1, 1], "test": [1, 1, 1]}
    assert archive.archive_name == "shapes.zip" and not archive.is_trainable
    assert imaging.StoredSplit(archive.directory, "train").encoding == "png"
    assert not list(archive.upload_dir.glob("archive.*"))  # kept as extracted images only
    assert sorted(p.name for p in archive.extracted_dir.iterdir()) == ["blue", "green", "red"]
    assert "Extracted 18 images (1 other files ignored)" in archive.log_text

    lists = by_name["lists"]
    assert lists.classes == ["red", "green", "blue"]
    assert lists.counts == {"train": [4, 3, 3], "val": [1, 1, 1], "test": [0, 0, 0]}
    assert lists.skipped == [["red/001.png", "training list line 11: duplicate of line 2"]]
    assert Path(lists.train_list).parent == lists.upload_dir

    # Nothing was written outside the datasets' own folders.
    assert listing(data_root / "datasets") - before["datasets"] == {str(d.pk) for d in by_name.values()}
    assert listing(data_root / "uploads") - before["uploads"] == {str(d.pk) for d in (archive, lists)}


def listing(folder):
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


# --- The form answers bad input before the job ----------------------------------------------------


def assert_refused(response, field, message):
    assert response.status_code == 200
    errors = " ".join(response.context["form"].errors.get(field, []))
    assert message in errors, response.context["form"].errors
    assert not Dataset.objects.exists()


def archive_form(data, name="upload.zip", **overrides):
    return form_data("", source_type="archive", archive=upload(name, data), **overrides)


IMAGES = {f"{c}/{i}.png": png_bytes(40 * i) for c in ("cats", "dogs") for i in range(3)}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (zip_of(IMAGES | {"../../evil.png": b"x"}), "points outside the archive"),
        (zip_of(IMAGES | {"/etc/evil.png": b"x"}), "absolute path"),
        (zip_of(IMAGES, symlinks=[("cats/x.png", "/etc/passwd")]), "is a symbolic link"),
        (tar_of(IMAGES, links=[("cats/x.png", "/etc/passwd")]), "is a link"),
        (zip_of(IMAGES | {"cats/bomb.png": bytes(20 << 20)}), "compression bomb"),
        (b"GIF89a pretending to be a zip", "not a .zip or .tar.gz archive"),
        (zip_of({f"cats/{i}.png": b"" for i in range(11)}), "more than 10 entries|11 entries; the limit is 10"),
        (zip_of({"cats/1.png": png_bytes(), "cats/2.png": png_bytes()}), "at least two classes"),
        (zip_of({"notes/readme.txt": b"x"}), "holds no images in class folders"),
    ],
    ids=["dotdot", "absolute", "zip-symlink", "tar-symlink", "bomb", "not-an-archive", "too-many", "one-class",
         "no-images"],
)  # fmt: skip
def test_the_form_refuses_bad_archives_and_writes_nothing(client, alice, settings, data, message):
    settings.DATASET_ARCHIVE_MAX_ENTRIES = 10
    client.force_login(alice)
    response = client.post(reverse("dataset-new"), archive_form(data, val_percent=0))
    errors = " ".join(response.context["form"].errors.get("archive", []))
    assert re.search(message, errors), response.context["form"].errors
    assert not Dataset.objects.exists()
    assert not (Path(settings.DATA_ROOT) / "uploads").exists()


def test_the_form_says_which_class_is_too_small_for_validation(client, alice, fresh_folder):
    root = write_tree(fresh_folder(), {"cat/1.png": png_bytes(), "cat/2.png": png_bytes(), "owl/1.png": png_bytes()})
    client.force_login(alice)
    assert_refused(
        client.post(reverse("dataset-new"), form_data(root, val_percent=10)),
        "val_percent",
        "Class 'owl' has only 1 image; it needs at least 2 to have one for training and one for validation.",
    )


def test_the_form_checks_validation_and_test_folders(client, alice, mnist_root, fresh_folder):
    odd = write_tree(fresh_folder(), {"0/1.png": png_bytes(), "zebra/1.png": png_bytes()})
    client.force_login(alice)
    response = client.post(reverse("dataset-new"), form_data(mnist_root / "train", val_folder=str(odd)))
    assert_refused(response, "source_folder", "validation folder has classes the training folder has not: 'zebra'")
    response = client.post(reverse("dataset-new"), form_data(mnist_root / "train", test_folder="/etc"))
    assert_refused(response, "test_folder", "outside the import folders")
    response = client.post(reverse("dataset-new"), form_data(mnist_root / "train", val_percent=50, test_percent=50))
    assert_refused(response, "test_percent", "at most 90 percent")


@pytest.mark.parametrize(
    ("train", "field", "message"),
    [
        (b"red/000.png 0\nred/nope.png 0\n", "train_list_upload", "line 2: red/nope.png: file not found"),
        (b"red/000.png 0\n../../../etc/passwd 1\n", "train_list_upload", "line 2: ../../../etc/passwd: outside"),
        (b"red/000.png 0\nred/001.png 9\n", "train_list_upload", "line 2: unknown class \u201c9\u201d"),
        (b"red/000.png 0\nred/001.png\n", "train_list_upload", "line 2: expected \u201cpath label\u201d"),
        (b"r\xe9d/000.png 0\n", "train_list_upload", "not UTF-8 text"),
    ],
    ids=["missing-file", "outside-roots", "unknown-label", "no-label", "not-utf8"],
)
def test_the_form_names_bad_list_lines(client, alice, color_folder, train, field, message):
    client.force_login(alice)
    data = form_data(
        "", source_type="lists", list_prefix=str(color_folder), val_percent=0,
        labels_upload=upload("labels.txt", b"red\ngreen\nblue\n"), train_list_upload=upload("train.txt", train),
    )  # fmt: skip
    assert_refused(client.post(reverse("dataset-new"), data), field, message)


def test_the_form_refuses_a_labels_file_naming_a_class_twice(client, alice, color_folder):
    client.force_login(alice)
    data = form_data(
        "", source_type="lists", list_prefix=str(color_folder),
        labels_upload=upload("labels.txt", b"red\nblue\nred\n"), train_list_upload=upload("t.txt", b"red/000.png 0\n"),
    )  # fmt: skip
    assert_refused(client.post(reverse("dataset-new"), data), "labels_upload", "names class 'red' twice")
    data = form_data("", source_type="lists", labels_file="/etc/passwd", train_list="/etc/hosts")
    assert_refused(client.post(reverse("dataset-new"), data), "labels_file", "outside the import folders")


# --- A worker killed mid-build ---------------------------------------------------------------------


def descendants(pid):
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += [int(child), *descendants(int(child))]
    return found


@pytest.mark.django_db(transaction=True)
def test_a_build_whose_work_horse_is_killed_is_built_again_by_its_worker(client, alice, fresh_folder):
    # 300 large (but tiny on disk) images keep the build busy for a few seconds.
    root = fresh_folder("slow")
    big = root / "big.png"
    Image.new("L", (3000, 3000), 90).save(big, compress_level=1)
    for name in ("a", "b"):
        (root / name).mkdir()
        for i in range(150):
            (root / name / f"{i}.png").hardlink_to(big)
    big.unlink()
    client.force_login(alice)
    client.post(reverse("dataset-new"), form_data(root, val_percent=0))
    dataset = Dataset.objects.get()

    process = subprocess.Popen(
        [sys.executable, "manage.py", "rqworker", "--burst", "datasets"], cwd=ROOT, env=subprocess_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        horse, pool = None, []
        while time.monotonic() < deadline and not pool:
            time.sleep(0.1)
            children = descendants(process.pid)
            if children and Dataset.objects.filter(pk=dataset.pk, progress_total__gt=0).exists():
                horse, pool = children[0], children[1:]
        assert pool, "the build never started decoding"
        os.kill(horse, signal.SIGKILL)
        # The worker notices at once and queues the build again; in burst mode it then runs it.
        process.wait(timeout=120)
    finally:
        process.kill()

    dataset.refresh_from_db()
    assert dataset.status == Dataset.Status.DONE, dataset.error
    assert dataset.attempts == 2 and dataset.image_count == 300
    assert "The worker stopped; building again from the start (attempt 2 of 3)" in dataset.log_text
    assert not list(dataset.directory.parent.glob(f".{dataset.pk}.partial-*"))
    # The decoding pool died with its parent rather than waiting forever for work.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pool):
        time.sleep(0.1)
    assert not [pid for pid in pool if Path(f"/proc/{pid}").exists()]
