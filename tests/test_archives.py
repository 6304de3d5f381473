"""Uploaded archives, without Django: the rules every entry must pass before anything is
written, and extraction that never writes outside its own folder."""

import io
import zipfile

import pytest

from datasets.archives import ArchiveError, Limits, extract_archive, inspect_archive
from tests.dataset_fixtures import png_bytes, tar_of, zip_of

IMAGES = {f"{c}/{i}.png": png_bytes(40 * i) for c in ("cats", "dogs") for i in range(3)}


def written(path, data):
    path.write_bytes(data)
    return path


def everything_under(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# --- Good archives ------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [zip_of, tar_of, lambda files: tar_of(files, mode="w")], ids=["zip", "tar.gz", "tar"])
def test_class_folders_are_found_and_only_images_extracted(tmp_path, make):
    files = {f"pets/{name}": data for name, data in IMAGES.items()}
    files |= {"pets/README.txt": b"hello", "pets/cats/.DS_Store": b"x", "__MACOSX/pets/cats/._0.png": b"x"}
    archive = written(tmp_path / "upload.bin", make(files))

    inspection = extract_archive(archive, tmp_path / "out")

    assert inspection.class_counts == {"cats": 3, "dogs": 3}
    assert inspection.ignored == 3
    assert everything_under(tmp_path / "out") == [
        "cats", "cats/0.png", "cats/1.png", "cats/2.png", "dogs", "dogs/0.png", "dogs/1.png", "dogs/2.png",
    ]  # fmt: skip
    assert (tmp_path / "out" / "dogs" / "2.png").read_bytes() == IMAGES["dogs/2.png"]


def test_utf8_names_survive(tmp_path):
    archive = written(tmp_path / "a.zip", zip_of({"chats/été.png": png_bytes(), "chiens/狗.png": png_bytes()}))
    extract_archive(archive, tmp_path / "out")
    assert everything_under(tmp_path / "out") == ["chats", "chats/été.png", "chiens", "chiens/狗.png"]


def test_an_uploaded_file_object_is_inspected_in_place():
    inspection = inspect_archive(io.BytesIO(zip_of(IMAGES)))
    assert inspection.kind == "zip" and len(inspection.members) == 6


# --- Hostile archives: refused with a reason, nothing written ----------------------------------


def refused(tmp_path, data, message, limits=None):
    archive = written(tmp_path / "upload.zip", data)
    with pytest.raises(ArchiveError, match=message):
        extract_archive(archive, tmp_path / "out", limits or Limits())
    assert everything_under(tmp_path) == ["upload.zip"]  # not even the destination folder


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"cats/../../etc/cron.d/evil.png": b"x"}, "points outside the archive"),
        ({"../evil.png": b"x"}, "points outside the archive"),
        ({"cats\\..\\..\\evil.png": b"x"}, "points outside the archive"),
        ({"/etc/evil.png": b"x"}, "absolute path"),
        ({"C:/Windows/evil.png": b"x"}, "absolute path"),
    ],
)
@pytest.mark.parametrize("make", [zip_of, tar_of], ids=["zip", "tar.gz"])
def test_paths_leaving_the_archive_are_refused(tmp_path, files, message, make):
    refused(tmp_path, make(IMAGES | files), message)


def test_links_are_refused(tmp_path):
    refused(tmp_path, zip_of(IMAGES, symlinks=[("cats/passwd.png", "/etc/passwd")]), "is a symbolic link")
    refused(tmp_path, tar_of(IMAGES, links=[("cats/passwd.png", "/etc/passwd")]), "is a link")


def test_a_hundred_thousand_tiny_entries_are_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i in range(100_000):
            archive.writestr(f"c{i % 2}/{i}.png", b"")
    refused(tmp_path, buffer.getvalue(), "100,000 entries; the limit is 50,000")


@pytest.mark.parametrize("make", [zip_of, tar_of], ids=["zip", "tar.gz"])
def test_a_thousand_to_one_compression_bomb_is_refused(tmp_path, make):
    bomb = make(IMAGES | {"cats/bomb.png": bytes(20 << 20)})  # 20 MiB of zeros, ~20 KiB packed
    refused(tmp_path, bomb, r"expands [\d,]+ times \(limit 100\): this looks like a compression bomb")


def test_too_many_bytes_uncompressed_are_refused(tmp_path):
    refused(tmp_path, zip_of(IMAGES), "more than 100 bytes once uncompressed", Limits(max_bytes=100))


@pytest.mark.parametrize(
    "data",
    [b"PK\x03\x04 but not really a zip", b"\x89PNG\r\n\x1a\n" + bytes(100), b"just some text\n" * 50, b""],
    ids=["fake-zip-magic", "png", "text", "empty"],
)
def test_a_non_archive_renamed_zip_is_refused(tmp_path, data):
    refused(tmp_path, data, r"not a \.zip or \.tar\.gz archive")


def test_two_entries_with_one_name_are_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, pytest.warns(UserWarning, match="Duplicate name"):
        archive.writestr("cats/1.png", png_bytes(1))
        archive.writestr("cats/1.png", png_bytes(2))
    refused(tmp_path, buffer.getvalue(), "two entries named")


def test_a_file_that_is_also_a_folder_is_refused(tmp_path):
    refused(tmp_path, zip_of({"cats/1.png": b"x", "cats/1.png/2.png": b"y"}), "both as a file and as a folder")


def test_a_truncated_archive_is_refused(tmp_path):
    refused(tmp_path, tar_of(IMAGES)[:200], "damaged|not a .zip")


def test_an_extraction_interrupted_part_way_leaves_nothing(tmp_path):
    archive = written(tmp_path / "upload.zip", zip_of(IMAGES))

    def stop(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_archive(archive, tmp_path / "out", progress=stop)
    assert everything_under(tmp_path) == ["upload.zip"]
