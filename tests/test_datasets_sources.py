"""Planning a dataset before decoding anything, without Django: text-file lists, separate
validation and test folders, percentages carved three ways, and the limits per class."""

import os

import pytest

from datasets.imaging import ImagingError, scan_class_folders, split_stratified, split_three_ways
from datasets.lists import locate, parse_list, read_labels
from datasets.sources import ListProblem, limit_per_class, plan_counts, plan_folders, plan_lists
from tests.dataset_fixtures import png_bytes, write_tree

CLASSES = ["cat", "dog"]


def items_per_class(*sizes):
    return [(f"{label}/{i}.png", label) for label, size in enumerate(sizes) for i in range(size)]


# --- Labels files and lists -----------------------------------------------------------------------


def test_labels_file_with_crlf_bom_and_blank_lines():
    assert read_labels("\ufeffcat\r\ndog\r\n\r\nbird\r\n".encode()) == ["cat", "dog", "bird"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"cat\ndog\ncat\n", "names class 'cat' twice \\(lines 1 and 3\\)"),
        (b"cat\n", "at least two classes"),
        (b"chat\n\xe9t\xe9\n", "not UTF-8 text \\(byte 0xe9 at position 5\\)"),
    ],
)
def test_labels_file_mistakes_are_explained(data, message):
    with pytest.raises(ImagingError, match=message):
        read_labels(data)


def test_a_list_reads_paths_with_spaces_labels_by_number_or_name_crlf_and_utf8():
    data = "# comment\r\ncats/été 1.png 0\r\n\r\ndogs/狗.png dog\r\ncats/two.png\t0\r\n".encode()
    parsed = parse_list(data, CLASSES)
    assert [(e.line, e.path, e.label) for e in parsed.entries] == [
        (2, "cats/été 1.png", 0),
        (4, "dogs/狗.png", 1),
        (5, "cats/two.png", 0),
    ]
    assert parsed.problems == [] and parsed.duplicates == []


def test_a_list_reports_bad_lines_and_duplicates():
    data = b"a.png 0\nb.png 7\nc.png bird\nd.png\na.png 0\na.png 1\n"
    parsed = parse_list(data, CLASSES)
    assert [e.path for e in parsed.entries] == ["a.png"]
    assert [line for line, _ in parsed.problems] == [2, 3, 4]
    assert "unknown class “7” (classes are 0 to 1 or their names)" in parsed.problems[0][1]
    assert "expected “path label”" in parsed.problems[2][1]
    assert parsed.duplicates == [
        (5, "a.png", "duplicate of line 1"),
        (6, "a.png", "duplicate of line 1, which gives it class 'cat'"),
    ]


def test_a_list_that_is_not_utf8_is_refused():
    with pytest.raises(ImagingError, match="training list is not UTF-8"):
        parse_list(b"caf\xe9.png 0\n", CLASSES, "training list")


def test_locate_keeps_listed_images_inside_the_import_roots(tmp_path):
    root = write_tree(tmp_path / "root", {"cats/1.png": png_bytes(), "folder/x.png/keep": b""})
    outside = write_tree(tmp_path / "outside", {"secret.png": png_bytes()})
    (root / "cats" / "link.png").symlink_to(outside / "secret.png")
    roots = [root]

    assert locate("cats/1.png", None, roots) == (str(root / "cats" / "1.png"), "")
    assert locate("1.png", root / "cats", roots) == (str(root / "cats" / "1.png"), "")
    assert locate(str(root / "cats" / "1.png"), None, roots)[0] is not None
    assert locate("cats/missing.png", None, roots) == (None, "file not found")
    assert locate("folder/x.png", None, roots) == (None, "not a regular file")
    for escape in (str(outside / "secret.png"), "../outside/secret.png", "cats/link.png", "/etc/passwd"):
        assert locate(escape, None, roots) == (None, "outside the import folders"), escape


def test_plan_lists_strict_names_every_bad_line_and_lenient_skips_them(tmp_path):
    root = write_tree(tmp_path, {f"{c}/{i}.png": png_bytes() for c in ("cats", "dogs") for i in range(4)})
    train = b"".join(f"cats/{i}.png cat\ndogs/{i}.png dog\n".encode() for i in range(4))
    train += b"cats/missing.png 0\n/etc/passwd 1\ncats/0.png 0\n"
    lists = {"train": parse_list(train, CLASSES)}
    options = {"list_names": {"train": "train.txt"}, "prefix": None, "roots": [root], "val_percent": 25}

    with pytest.raises(
        ListProblem, match=r"2 lines of the train.txt cannot be used: line 9: cats/missing.png: file"
    ) as error:
        plan_lists(CLASSES, lists, strict=True, **options)
    assert error.value.split == "train"
    assert "line 10: /etc/passwd: outside the import folders" in str(error.value)

    plan = plan_lists(CLASSES, lists, strict=False, **options)
    assert plan.counts() == {"train": [3, 3], "val": [1, 1], "test": [0, 0]}
    assert sorted(plan.skipped) == [
        ("/etc/passwd", "train.txt line 10: outside the import folders"),
        ("cats/0.png", "train.txt line 11: duplicate of line 1"),
        ("cats/missing.png", "train.txt line 9: file not found"),
    ]


def test_plan_lists_with_a_validation_list_carves_nothing(tmp_path):
    root = write_tree(tmp_path, {f"{c}/{i}.png": png_bytes() for c in ("cats", "dogs") for i in range(3)})
    train = b"cats/0.png 0\ncats/1.png 0\ndogs/0.png 1\ndogs/1.png 1\n"
    val = b"cats/2.png cat\ndogs/2.png dog\n"
    plan = plan_lists(
        CLASSES,
        {"train": parse_list(train, CLASSES), "val": parse_list(val, CLASSES)},
        list_names={"train": "train", "val": "val"},
        prefix=root,
        roots=[root],
        val_percent=50,
    )
    assert plan.counts() == {"train": [2, 2], "val": [1, 1], "test": [0, 0]}


# --- Folders ------------------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path):
    def tree(sizes):
        return {f"{name}/{i}.png": png_bytes() for name, size in sizes.items() for i in range(size)}

    return (
        write_tree(tmp_path / "train", tree({"ant": 6, "bee": 5, "owl": 3})),
        write_tree(tmp_path / "val", tree({"ant": 2, "bee": 1})),
        write_tree(tmp_path / "test", tree({"ant": 1, "owl": 1})),
    )


def test_separate_validation_and_test_folders(folders):
    train, val, test = folders
    plan = plan_folders(train, val_root=val, test_root=test, val_percent=30, test_percent=30)
    assert plan.classes == ["ant", "bee", "owl"]
    assert plan.counts() == {"train": [6, 5, 3], "val": [2, 1, 0], "test": [1, 0, 1]}
    assert all(os.path.dirname(os.path.dirname(p)) == str(val) for p, _ in plan.splits["val"])


def test_a_validation_folder_with_an_unknown_class_is_refused(folders, tmp_path):
    train, val, _ = folders
    write_tree(val, {"yak/1.png": png_bytes()})
    with pytest.raises(ImagingError, match="validation folder has classes the training folder has not: 'yak'"):
        plan_folders(train, val_root=val)


def test_percentages_carve_validation_and_test_from_each_class(folders):
    plan = plan_folders(folders[0], val_percent=20, test_percent=20, seed=3)
    assert plan.counts() == {"train": [4, 3, 1], "val": [1, 1, 1], "test": [1, 1, 1]}
    assert plan_folders(folders[0], val_percent=20, test_percent=20, seed=3).splits == plan.splits


def test_a_class_with_one_image_when_validation_needs_two(tmp_path):
    write_tree(tmp_path, {"cat/1.png": png_bytes(), "cat/2.png": png_bytes(), "owl/1.png": png_bytes()})
    with pytest.raises(
        ImagingError, match="class 'owl' has only 1 image; it needs at least 2 to have one for training"
    ):
        plan_folders(tmp_path, val_percent=10)
    with pytest.raises(ImagingError, match="needs at least 3 to have one each for training, validation and testing"):
        plan_folders(tmp_path, val_percent=10, test_percent=10)
    # Asking for a minimum of 2 per class leaves the owl out instead, and says so.
    with pytest.raises(ImagingError, match="needs at least two classes with at least 2 images; found 1"):
        plan_folders(tmp_path, val_percent=10, min_per_class=2)


def test_min_and_max_per_class(folders):
    plan = plan_folders(folders[0], min_per_class=4, max_per_class=4, seed=1)
    assert plan.classes == ["ant", "bee"]
    assert plan.counts()["train"] == [4, 4]
    assert plan.notes == [
        "Class 'ant': 4 of its 6 images used (the maximum per class).",
        "Class 'bee': 4 of its 5 images used (the maximum per class).",
        "Class 'owl' left out: 3 images, fewer than the minimum of 4.",
    ]
    assert plan_folders(folders[0], min_per_class=4, max_per_class=4, seed=1).splits == plan.splits
    assert plan_folders(folders[0], min_per_class=4, max_per_class=4, seed=2).splits != plan.splits


def test_limit_per_class_relabels_what_it_keeps():
    classes, items, notes = limit_per_class(["a", "b", "c"], items_per_class(1, 3, 2), min_count=2)
    assert classes == ["b", "c"]
    assert [label for _, label in items] == [0, 0, 0, 1, 1]
    assert notes == ["Class 'a' left out: 1 image, fewer than the minimum of 2."]


def test_plan_counts_checks_an_archive_before_extraction():
    plan = plan_counts({"cats": 10, "dogs": 5}, val_percent=20)
    assert plan.counts() == {"train": [8, 4], "val": [2, 1], "test": [0, 0]}
    with pytest.raises(ImagingError, match="class 'dogs' has only 1 image"):
        plan_counts({"cats": 10, "dogs": 1}, val_percent=20)


def test_a_fifo_named_like_an_image_is_not_read(tmp_path):
    write_tree(tmp_path, {"a/1.png": b"x", "b/1.png": b"x"})
    os.mkfifo(tmp_path / "a" / "stuck.png")
    _, items = scan_class_folders(tmp_path)
    assert [os.path.basename(path) for path, _ in items] == ["1.png", "1.png"]


# --- Three-way split ------------------------------------------------------------------------------


def test_three_way_split_without_test_is_the_two_way_split():
    items = items_per_class(50, 10, 3)
    assert split_three_ways(items, 20, 0, seed=5)[:2] == split_stratified(items, 20, seed=5)


def test_three_way_split_keeps_validation_when_test_is_added():
    items = items_per_class(50, 10, 3)
    train, val, test = split_three_ways(items, 20, 10, seed=5)
    assert val == split_stratified(items, 20, seed=5)[1]
    assert sorted(train + val + test) == sorted(items)
    assert [sum(1 for _, label in test if label == c) for c in range(3)] == [5, 1, 1]
