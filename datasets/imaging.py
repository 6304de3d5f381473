"""Image-classification dataset core: decode, normalise, resize and pack images into .npy files.

Pure Python (numpy + Pillow), no Django: the web app calls :func:`build_splits` from a background
job and stores the returned :class:`BuildResult`.

The layout on disk: ``{train,val,test}_images.npy`` (N, H, W, C) uint8, ``{train,val,test}_labels.npy``
(N,) int32, ``mean.npy`` (H, W, C) float32 (of the training split), ``labels.txt`` and ``info.json``.
Raw .npy is what training memory-maps without decoding anything; a dataset may instead keep its
images PNG- or JPEG-encoded (``{split}_images.bin`` with ``{split}_offsets.npy``) to save space, and
:class:`StoredSplit` reads either.  Images are stored in the order given (sorted by class, then path,
for a folder) unless the build shuffles them.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import math
import os
import re
import shutil
import signal
import struct
import sys
import threading
import time
import uuid
import warnings
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp"})
RESIZE_MODES = ("squash", "crop", "fill", "half_crop")
MAX_SIDE = 4096
SPLITS = ("train", "val", "test")
# Raw first: training memory-maps it and reads ~100x faster than it decodes PNG (bench.dataset_bench).
ENCODINGS = ("raw", "png", "jpeg")

_RESAMPLE = Image.Resampling.BILINEAR  # what DIGITS used; Pillow antialiases it when shrinking
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
# What Pillow's decoders raise on damaged data, short of a bug in our own code.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)
_CHUNK_BYTES = 4 << 20  # decoded pixels per worker task: big enough to amortise IPC, small enough to stream
_AHEAD_BYTES = 256 << 20  # decoded pixels waiting for a DecodePool's caller, beyond two batches per worker
_PROGRESS_INTERVAL = 0.1  # seconds
_JPEG_QUALITY = 90
_SHUFFLE_STREAM = 0x5F  # keeps the shuffle's random stream apart from the split's ([seed, label])
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

Source = str | os.PathLike[str] | BinaryIO
ProgressCallback = Callable[[int, int], object]
_Job = tuple[str, list[tuple[str, int]]]  # split name, (path, label) items
# images (stacked array, or encoded bytes each), their pixel sum (train only), (index, reason) failures
_ChunkResult = tuple[np.ndarray | list[bytes], np.ndarray | None, list[tuple[int, str]]]


class ImagingError(Exception):
    """A problem with the user's images or folders; the message is meant to be shown to them."""


@dataclass
class BuildResult:
    classes: list[str]
    counts: dict[str, list[int]]  # split name -> number of images per class, in class order
    skipped: list[tuple[str, str]]  # (path relative to the source root, reason)
    total_images: int  # images written, all splits together
    stored_bytes: int = 0  # size of the output folder


def load_image(
    source: Source,
    *,
    width: int,
    height: int,
    channels: int,
    resize_mode: str = "squash",
) -> np.ndarray:
    """Decode one image to a (height, width, channels) uint8 array.

    The image is turned upright per its EXIF orientation and converted to grayscale (channels=1) or
    RGB (channels=3), transparency flattened onto white.  resize_mode follows DIGITS:

    * ``squash``: resize to the exact size, ignoring the aspect ratio;
    * ``crop``: keep the aspect ratio, fill the target and cut off the centred overflow;
    * ``fill``: keep the aspect ratio, fit inside the target and pad both sides with noise;
    * ``half_crop``: halfway between the two, so it crops a little and pads a little.

    Raises ImagingError when source is not a readable image, ValueError for impossible geometry.
    """
    _check_geometry(width, height, channels, resize_mode)
    with warnings.catch_warnings():
        _refuse_decompression_bombs()
        return _load(source, width, height, channels, resize_mode)


def _refuse_decompression_bombs() -> None:
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a dataset build must not
    # allocate gigabytes because one file claims to be 50000x50000.
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def _load(source: Source, width: int, height: int, channels: int, resize_mode: str) -> np.ndarray:
    """load_image minus the argument checks and the warning filter, which the build does once."""
    with _open_source(source) as stream:
        image = _decode(stream, channels, draft_side=max(width, height))
    return _resize(image, width, height, resize_mode)


def _check_geometry(width: int, height: int, channels: int, resize_mode: str) -> None:
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or not 1 <= value <= MAX_SIDE:
            raise ValueError(f"{name} must be an integer from 1 to {MAX_SIDE}, got {value!r}")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {', '.join(RESIZE_MODES)}; got {resize_mode!r}")


def _open_source(source: Source) -> contextlib.AbstractContextManager[BinaryIO]:
    """A binary stream on source; a file we open ourselves is closed afterwards, a caller's is not."""
    if not isinstance(source, (str, os.PathLike)):
        return contextlib.nullcontext(source)
    try:
        return open(source, "rb")
    except OSError as exc:
        raise ImagingError(f"cannot read file: {exc.strerror or exc}") from exc


def _decode(stream: BinaryIO, channels: int, draft_side: int) -> Image.Image:
    """Fully decode stream into an upright L or RGB image."""
    try:
        image = Image.open(stream)
        # JPEG only: let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still leaves both
        # sides >= the largest target side, which is enough for every resize mode and rotation.
        image.draft(None, (draft_side, draft_side))
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return _convert(image, channels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_large(exc) from exc
    except UnidentifiedImageError as exc:
        raise ImagingError("not an image file") from exc
    except _DECODE_ERRORS as exc:
        raise ImagingError(f"truncated or corrupt image: {exc}") from exc


def _too_large(exc: Exception) -> ImagingError:
    # Pillow gives the size only inside its message: "Image size (N pixels) exceeds limit of ...".
    found = re.search(r"(\d+) pixels", str(exc))
    size = f"{int(found[1]):,} pixels" if found else "size unknown"
    return ImagingError(f"image is too large ({size}; limit {Image.MAX_IMAGE_PIXELS:,} pixels)")


def _convert(image: Image.Image, channels: int) -> Image.Image:
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _to_8_bit(image)
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    elif image.mode not in ("L", "RGB"):
        # Palette, CMYK, YCbCr, 1-bit...: Pillow converts all of them to RGB, not all directly to L.
        image = image.convert("RGB")
    target = "L" if channels == 1 else "RGB"
    return image if image.mode == target else image.convert(target)


def _to_8_bit(image: Image.Image) -> Image.Image:
    # Pillow's convert("L") clips 16-bit values at 255, turning most of the range white; scale it
    # instead.  Older Pillows open 16-bit PNGs as 32-bit "I", so that mode is read as 16-bit too.
    pixels = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
    return Image.fromarray(((pixels + 128) // 257).astype(np.uint8))


def _resize(image: Image.Image, width: int, height: int, resize_mode: str) -> np.ndarray:
    if resize_mode == "squash":
        return _pixels(image.resize((width, height), _RESAMPLE))
    src_width, src_height = image.size
    ratios = (src_width / width, src_height / height)  # how much each side must shrink
    ratio = {"crop": min(ratios), "fill": max(ratios), "half_crop": sum(ratios) / 2}[resize_mode]
    size = (max(1, round(src_width / ratio)), max(1, round(src_height / ratio)))
    return _centre(_pixels(image.resize(size, _RESAMPLE)), width, height, seed=image.size)


def _pixels(image: Image.Image) -> np.ndarray:
    pixels = np.array(image)
    return pixels[:, :, np.newaxis] if pixels.ndim == 2 else pixels


def _centre(pixels: np.ndarray, width: int, height: int, seed: tuple[int, int]) -> np.ndarray:
    """Centre pixels on a height x width canvas, cropping what overflows and padding with noise."""
    src_rows, dst_rows = _centre_spans(pixels.shape[0], height)
    src_cols, dst_cols = _centre_spans(pixels.shape[1], width)
    if pixels.shape[0] >= height and pixels.shape[1] >= width:
        return pixels[src_rows, src_cols]
    # DIGITS padded with noise rather than a flat colour so that a network cannot key on the
    # border; seeding it from the image size keeps rebuilds of a dataset byte-identical.
    shape = (height, width, pixels.shape[2])
    canvas = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    canvas[dst_rows, dst_cols] = pixels[src_rows, src_cols]
    return canvas


def _centre_spans(length: int, target: int) -> tuple[slice, slice]:
    """(source, destination) slices that centre `length` pixels within `target` pixels."""
    if length >= target:
        start = (length - target) // 2
        return slice(start, start + target), slice(0, target)
    start = (target - length) // 2
    return slice(0, length), slice(start, start + length)


def scan_class_folders(
    root: str | os.PathLike[str], skipped: list[tuple[str, str]] | None = None
) -> tuple[list[str], list[tuple[str, int]]]:
    """Find the classes (sorted subfolder names) and (path, label) of every image under them.

    Images are looked for recursively inside each class folder.  Hidden entries and symbolic links
    are left out, so nothing outside root is ever read, and so are files that are not images;
    `skipped`, when given, gets each of them as (its path, why).
    """
    root = Path(root)
    if not root.exists():
        raise ImagingError(f"folder {root} does not exist")
    if not root.is_dir():
        raise ImagingError(f"{root} is not a folder")
    class_dirs = []
    for entry in _visible_entries(root, skipped):
        if entry.is_dir(follow_symlinks=False):
            class_dirs.append(entry)
        elif skipped is not None:
            skipped.append((entry.path, "not in a class folder"))
    class_dirs.sort(key=lambda entry: entry.name)
    if not class_dirs:
        raise ImagingError(f"folder {root} has no class subfolders (expected one subfolder per class)")
    classes: list[str] = []
    items: list[tuple[str, int]] = []
    for label, class_dir in enumerate(class_dirs):
        paths = sorted(_image_files(class_dir.path, skipped))
        if not paths:
            raise ImagingError(f"class folder '{class_dir.name}' contains no images")
        classes.append(class_dir.name)
        items.extend((path, label) for path in paths)
    return classes, items


def _visible_entries(folder, skipped=None) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            entries = list(entries)
    except OSError as exc:
        raise ImagingError(f"cannot read folder {folder}: {exc.strerror or exc}") from exc
    visible = []
    for entry in entries:
        why = (
            "hidden (its name starts with a dot)"
            if entry.name.startswith(".")
            else "a symbolic link, not followed"
            if entry.is_symlink()
            else ""
        )
        if not why:
            visible.append(entry)
        elif skipped is not None:
            skipped.append((entry.path, why))
    return visible


def _image_files(folder: str, skipped=None) -> Iterator[str]:
    for entry in _visible_entries(folder, skipped):
        if entry.is_dir(follow_symlinks=False):
            yield from _image_files(entry.path, skipped)
        elif is_image_name(entry.name) and entry.is_file(follow_symlinks=False):
            # Regular files only: opening a FIFO or a device named x.png would hang or read forever.
            yield entry.path
        elif skipped is not None:
            why = "not a regular file" if is_image_name(entry.name) else "not an image (by its name)"
            skipped.append((entry.path, why))


def is_image_name(name: str) -> bool:
    return name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS


def split_stratified(
    items: Iterable[tuple[str, int]],
    val_percent: float,
    seed: int,
    *,
    classes: Sequence[str] | None = None,
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Split (path, label) items into (train, val): split_three_ways without a test split."""
    train, val, _ = split_three_ways(items, val_percent, 0, seed, classes=classes)
    return train, val


def split_three_ways(
    items: Iterable[tuple[str, int]],
    val_percent: float,
    test_percent: float,
    seed: int,
    *,
    classes: Sequence[str] | None = None,
) -> tuple[list[tuple[str, int]], list[tuple[str, int]], list[tuple[str, int]]]:
    """Split (path, label) items into (train, val, test), drawing the percentages from each class at random.

    The same items, percentages and seed always give the same split, and each class is drawn from its
    own random stream, so adding a class leaves the split of the others unchanged; a test split is
    drawn after the validation one, so adding it leaves validation as it was.  Every class keeps at
    least one training image and gets at least one image in each split asked for.  Items keep their
    input order within a split.  classes, when given, names the labels in error messages.
    """
    for name, value in (("val_percent", val_percent), ("test_percent", test_percent)):
        if not 0 <= value < 100:
            raise ValueError(f"{name} must be at least 0 and below 100, got {value!r}")
    if val_percent + test_percent >= 100:
        raise ValueError(f"val_percent + test_percent must be below 100, got {val_percent + test_percent!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    by_label: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for item in items:
        by_label[item[1]].append(item)
    train: list[tuple[str, int]] = []
    val: list[tuple[str, int]] = []
    test: list[tuple[str, int]] = []
    for label, group in sorted(by_label.items()):
        name = classes[label] if classes is not None else f"#{label}"
        n_val, n_test = _held_out(len(group), val_percent, test_percent, name)
        order = np.random.default_rng([seed, label]).permutation(len(group)).tolist()
        to_val, to_test = set(order[:n_val]), set(order[n_val : n_val + n_test])
        for index, item in enumerate(group):
            (val if index in to_val else test if index in to_test else train).append(item)
    return train, val, test


def _held_out(size: int, val_percent: float, test_percent: float, name: str) -> tuple[int, int]:
    """How many images of a class of `size` go to validation and to test."""
    wanted = [max(1, round(size * percent / 100)) if percent > 0 else 0 for percent in (val_percent, test_percent)]
    uses = ["training"] + [use for use, n in zip(("validation", "testing"), wanted, strict=True) if n]
    if size < len(uses):
        images = "image" if size == 1 else "images"
        purposes = (
            f"one for {uses[0]} and one for {uses[1]}"
            if len(uses) == 2
            else "one each for training, validation and testing"
        )
        raise ImagingError(f"class '{name}' has only {size} {images}; it needs at least {len(uses)} to have {purposes}")
    while sum(wanted) > size - 1:  # keep one for training: take it from the larger held-out share
        wanted[0 if wanted[0] >= wanted[1] else 1] -= 1
    return wanted[0], wanted[1]


def build_dataset(
    source_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    width: int,
    height: int,
    channels: int,
    resize_mode: str,
    val_percent: float,
    test_percent: float = 0,
    seed: int = 0,
    shuffle: bool = False,
    encoding: str = "raw",
    progress: ProgressCallback | None = None,
    workers: int | None = None,
) -> BuildResult:
    """Build a dataset from the class folders under source_root: scan, split, then build_splits."""
    _check_geometry(width, height, channels, resize_mode)
    classes, items = scan_class_folders(source_root)
    train, val, test = split_three_ways(items, val_percent, test_percent, seed, classes=classes)
    return build_splits(
        {"train": train, "val": val, "test": test},
        out_dir,
        classes=classes,
        width=width,
        height=height,
        channels=channels,
        resize_mode=resize_mode,
        encoding=encoding,
        shuffle=shuffle,
        seed=seed,
        relative_to=source_root,
        progress=progress,
        workers=workers,
    )


def build_splits(
    splits: Mapping[str, Sequence[tuple[str, int]]],
    out_dir: str | os.PathLike[str],
    *,
    classes: Sequence[str],
    width: int,
    height: int,
    channels: int,
    resize_mode: str,
    encoding: str = "raw",
    shuffle: bool = False,
    seed: int = 0,
    relative_to: str | os.PathLike[str] | None = None,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
) -> BuildResult:
    """Decode the (path, label) items of each split ("train", "val", "test") into out_dir, which must not exist.

    Images are decoded in a pool of `workers` processes (default: one per CPU) and streamed in order
    into the output files, so memory use does not grow with the dataset.  Each split keeps the order
    given unless `shuffle`, which permutes it reproducibly from `seed`.  Files that cannot be decoded
    are skipped and listed in the result, by their path relative to `relative_to` when under it.
    Everything is written to a hidden sibling folder renamed to out_dir at the end: a build that
    fails, or is cancelled by raising from progress(done, total), leaves nothing behind.
    """
    _check_geometry(width, height, channels, resize_mode)
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}; got {encoding!r}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers!r}")
    unknown = set(splits) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; splits are {', '.join(SPLITS)}")
    if not splits.get("train"):
        raise ImagingError("the training split has no images")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ImagingError(f"output folder {out_dir} already exists")
    ordered = {name: list(splits.get(name, ())) for name in SPLITS}
    if shuffle:
        for index, name in enumerate(SPLITS):
            order = np.random.default_rng([seed, _SHUFFLE_STREAM, index]).permutation(len(ordered[name]))
            ordered[name] = [ordered[name][i] for i in order]

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        result = _build_into(
            staging,
            list(classes),
            ordered,
            load={"width": width, "height": height, "channels": channels, "resize_mode": resize_mode},
            encoding=encoding,
            relative_to=Path(relative_to) if relative_to is not None else None,
            progress=_throttled(progress, total=sum(len(items) for items in ordered.values())),
            workers=workers or os.cpu_count() or 1,
        )
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _build_into(
    folder: Path,
    classes: list[str],
    splits: dict[str, list[tuple[str, int]]],
    load: dict,
    encoding: str,
    relative_to: Path | None,
    progress: Callable[[int], None],
    workers: int,
) -> BuildResult:
    shape = (load["height"], load["width"], load["channels"])
    total = sum(len(items) for items in splits.values())
    chunk_size = max(1, min(_CHUNK_BYTES // math.prod(shape), math.ceil(total / (workers * 16))))
    jobs = [
        (name, items[start : start + chunk_size])
        for name, items in splits.items()
        for start in range(0, len(items), chunk_size)
    ]
    train_sum = np.zeros(shape, np.float64)
    skipped: list[tuple[str, str]] = []
    done = 0
    progress(done)

    with contextlib.ExitStack() as stack:
        writer_class = _RawWriter if encoding == "raw" else _EncodedWriter
        writers = {
            name: writer_class(stack.enter_context(open(folder / writer_class.filename(name), "wb")), len(items), shape)
            for name, items in splits.items()
        }
        # Forked workers inherit the common format plugins instead of each importing them.
        Image.preinit()
        pool = ProcessPoolExecutor(
            max(1, min(workers, len(jobs))),
            mp_context=pool_context(),
            initializer=_init_pool_worker,
            initargs=(os.getpid(),),
        )
        stack.callback(pool.shutdown, cancel_futures=True)
        for (name, chunk), (payload, pixel_sum, failures) in _decode_in_order(
            pool, jobs, load, encoding, window=4 * workers
        ):
            failed = {index for index, _ in failures}
            writers[name].append(payload, [label for i, (_, label) in enumerate(chunk) if i not in failed])
            if pixel_sum is not None:
                train_sum += pixel_sum
            skipped += [(_display_path(chunk[i][0], relative_to), reason) for i, reason in failures]
            done += len(chunk)
            progress(done)
        labels = {name: writer.finish(folder, name) for name, writer in writers.items()}

    if not len(labels["train"]):
        path, reason = skipped[0]
        raise ImagingError(
            f"none of the {len(splits['train'])} training images could be read (first one: {path}: {reason})"
        )
    for name, split_labels in labels.items():
        np.save(folder / f"{name}_labels.npy", split_labels)
    np.save(folder / "mean.npy", (train_sum / len(labels["train"])).astype(np.float32))
    (folder / "labels.txt").write_text("".join(f"{name}\n" for name in classes), encoding="utf-8")
    counts = {name: np.bincount(lab, minlength=len(classes)).tolist() for name, lab in labels.items()}
    info = {"encoding": encoding, "shape": list(shape), "classes": classes, "counts": counts}
    (folder / "info.json").write_text(json.dumps(info, indent=1), encoding="utf-8")
    return BuildResult(
        classes=classes,
        counts=counts,
        skipped=skipped,
        total_images=sum(len(lab) for lab in labels.values()),
        stored_bytes=sum(path.stat().st_size for path in folder.iterdir()),
    )


def _display_path(path: str, relative_to: Path | None) -> str:
    if relative_to is not None:
        with contextlib.suppress(ValueError):
            return Path(path).relative_to(relative_to).as_posix()
    return path


def pool_context() -> BaseContext:
    # fork starts workers in milliseconds but can deadlock when another thread holds a lock at the
    # moment of the fork: a Python thread (a threaded web server, a job runner's heartbeat...) or
    # JAX's runtime, whose native threads Python does not count.  Only then pay for spawn.  Not
    # forkserver: its workers keep the server's liveness pipe open, so after a SIGKILL of the
    # build the server and its workers would wait for each other forever; spawned workers are
    # our own children and die with us.
    threaded = threading.active_count() > 1 or _jax_started()
    return get_context("spawn" if threaded else "fork")


def _jax_started() -> bool:
    # Importing JAX starts no thread (an RQ worker imports it with the URLs); its runtime's
    # threads start with its first backend. Anything unexpected counts as started.
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return xla_bridge.backends_are_initialized()
    except Exception:
        return True


def _init_pool_worker(parent_pid: int) -> None:
    # catch_warnings() would cost 8% of decoding a small PNG if load_image set it up per image.
    _refuse_decompression_bombs()
    _die_with_parent(parent_pid)


def _die_with_parent(parent_pid: int) -> None:
    # A build killed with SIGKILL (a killed RQ work-horse, the OOM killer) cannot shut its pool
    # down, and the workers would wait forever on a queue nobody feeds: have Linux kill them too.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent died before prctl took effect


def _decode_in_order(
    pool: ProcessPoolExecutor, jobs: list[_Job], load: dict, encoding: str, window: int
) -> Iterator[tuple[_Job, _ChunkResult]]:
    """Yield (job, result) in job order, with at most `window` jobs queued so memory stays bounded."""
    in_flight: deque[tuple[_Job, Future]] = deque()
    for job in jobs:
        paths = [path for path, _ in job[1]]
        in_flight.append((job, pool.submit(_decode_chunk, paths, load, encoding, job[0] == "train")))
        if len(in_flight) >= window:
            job, future = in_flight.popleft()
            yield job, future.result()
    for job, future in in_flight:
        yield job, future.result()


def _decode_chunk(paths: list[str], load: dict, encoding: str, want_sum: bool) -> _ChunkResult:
    """Worker: decode paths; return the good images (stacked, or encoded one by one) in order, their
    pixel sum when asked, and (index, reason) for the rest."""
    images = np.empty((len(paths), load["height"], load["width"], load["channels"]), np.uint8)
    failures: list[tuple[int, str]] = []
    for index, path in enumerate(paths):
        try:
            images[index - len(failures)] = _load(path, **load)
        except ImagingError as exc:
            failures.append((index, str(exc)))
    images = images[: len(paths) - len(failures)]
    # The mean image is summed here, in parallel, rather than in the one process that writes.
    # uint32 is exact: a chunk holds at most _CHUNK_BYTES images of one pixel, 255 * 4 Mi < 2**32.
    pixel_sum = images.sum(axis=0, dtype=np.uint32) if want_sum else None
    payload = images if encoding == "raw" else [encode_image(image, encoding) for image in images]
    return payload, pixel_sum, failures


class DecodePool:
    """The build's decoding processes for a caller that uses the images as they come (an
    evaluation classifying one batch while the next ones decode), with the same preprocessing.

    Start it before JAX is imported and before any thread: its workers are then forked in
    milliseconds (pool_context), rather than spawned in a second or so.
    """

    def __init__(self, *, width: int, height: int, channels: int, resize_mode: str, workers: int | None = None):
        _check_geometry(width, height, channels, resize_mode)
        self.load = {"width": width, "height": height, "channels": channels, "resize_mode": resize_mode}
        self.workers = workers or os.cpu_count() or 1
        Image.preinit()
        self.start_method = pool_context().get_start_method()
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=pool_context(), initializer=_init_pool_worker, initargs=(os.getpid(),)
        )
        self._pool.submit(int).result()  # the workers exist from here on

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(cancel_futures=True)

    def batches(
        self, paths: Sequence[str], batch_size: int, held: int = 0
    ) -> Iterator[tuple[np.ndarray, list[tuple[int, str]]]]:
        """(the decoded images, (index in the batch, reason) of the files that failed) per
        `batch_size` paths, in order, with a few batches decoding ahead. A caller that holds
        `held` images before it uses them (and asks for no more meanwhile) gets twice as many
        decoding ahead, within _AHEAD_BYTES: else the workers idle while it works."""
        image_bytes = self.load["width"] * self.load["height"] * self.load["channels"]
        room = max(1, _AHEAD_BYTES // (batch_size * image_bytes))
        depth = max(2 * self.workers, min(room, -(-2 * held // batch_size)))
        in_flight: deque[Future] = deque()
        for start in range(0, len(paths), batch_size):
            chunk = list(paths[start : start + batch_size])
            in_flight.append(self._pool.submit(_decode_chunk, chunk, self.load, "raw", False))
            if len(in_flight) >= depth:
                images, _, failures = in_flight.popleft().result()
                yield images, failures
        for future in in_flight:
            images, _, failures = future.result()
            yield images, failures


def encode_image(pixels: np.ndarray, encoding: str = "png") -> bytes:
    """One (H, W, C) uint8 image as PNG or JPEG bytes."""
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    buffer = io.BytesIO()
    if encoding == "jpeg":
        image.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def _throttled(progress: ProgressCallback | None, total: int) -> Callable[[int], None]:
    last_call = -math.inf

    def report(done: int) -> None:
        nonlocal last_call
        now = time.monotonic()
        if progress is not None and (done == total or now - last_call >= _PROGRESS_INTERVAL):
            last_call = now
            progress(done, total)

    return report


class _RawWriter:
    """Appends one split's images, in order, to an .npy file announced for `capacity` of them.

    Plain sequential writes rather than a memory map: a mapping would count every page written
    towards the process's resident memory, so a 50 GB dataset would make the build look 50 GB
    large to the OOM killer.
    """

    @staticmethod
    def filename(split: str) -> str:
        return f"{split}_images.npy"

    def __init__(self, file: BinaryIO, capacity: int, shape: tuple[int, int, int]):
        self._file = file
        self._shape = shape
        self._header_size = self._write_header(capacity)
        self._labels = np.empty(capacity, np.int32)
        self._count = 0

    def append(self, images: np.ndarray, labels: list[int]) -> None:
        self._file.write(images)
        self._labels[self._count : self._count + len(images)] = labels
        self._count += len(images)

    def finish(self, folder: Path, split: str) -> np.ndarray:
        """Set the header to the number of images written and return their labels."""
        # Skipped files leave fewer rows than announced.  numpy pads every header with room for
        # the first dimension to grow to 21 digits, so a smaller count fits in the same bytes.
        if self._write_header(self._count) != self._header_size:
            raise RuntimeError("this numpy does not pad .npy headers; the image count cannot be rewritten")
        return self._labels[: self._count]

    def _write_header(self, length: int) -> int:
        self._file.seek(0)
        header = {"descr": "|u1", "fortran_order": False, "shape": (length, *self._shape)}
        np.lib.format.write_array_header_1_0(self._file, header)
        return self._file.tell()


class _EncodedWriter:
    """Appends one split's encoded images to a blob file, and their offsets to {split}_offsets.npy."""

    @staticmethod
    def filename(split: str) -> str:
        return f"{split}_images.bin"

    def __init__(self, file: BinaryIO, capacity: int, shape: tuple[int, int, int]):
        self._file = file
        self._offsets = [0]
        self._labels: list[int] = []

    def append(self, blobs: list[bytes], labels: list[int]) -> None:
        for blob in blobs:
            self._file.write(blob)
            self._offsets.append(self._offsets[-1] + len(blob))
        self._labels += labels

    def finish(self, folder: Path, split: str) -> np.ndarray:
        np.save(folder / f"{split}_offsets.npy", np.array(self._offsets, np.int64))
        return np.array(self._labels, np.int32)


class StoredSplit:
    """Read access to one split of a built dataset, raw or encoded: labels, pixels and PNG bytes.

    Raw splits are memory-mapped, so opening one costs the same for ten images or ten million.
    """

    def __init__(self, folder: str | os.PathLike[str], split: str):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        folder = Path(folder)
        self.labels = np.load(folder / f"{split}_labels.npy", mmap_mode="r")
        raw = folder / _RawWriter.filename(split)
        if raw.exists():
            self.encoding = "raw"
            self._images = np.load(raw, mmap_mode="r")
        else:
            self._blobs = folder / _EncodedWriter.filename(split)
            self._offsets = np.load(folder / f"{split}_offsets.npy")
            self.encoding = json.loads((folder / "info.json").read_text(encoding="utf-8"))["encoding"]

    def __len__(self) -> int:
        return len(self.labels)

    def pixels(self, index: int) -> np.ndarray:
        """Image `index` as an (H, W, C) uint8 array."""
        if self.encoding == "raw":
            return np.asarray(self._images[index])
        with Image.open(io.BytesIO(self._read(index))) as image:
            return _pixels(image)

    def png(self, index: int) -> bytes:
        """Image `index` as PNG bytes: as stored when stored as PNG, else encoded now."""
        if self.encoding == "png":
            return self._read(index)
        return encode_image(self.pixels(index), "png")

    def _read(self, index: int) -> bytes:
        start, end = int(self._offsets[index]), int(self._offsets[index + 1])
        with open(self._blobs, "rb") as file:
            file.seek(start)
            return file.read(end - start)


def mean_pixels(mean: np.ndarray) -> np.ndarray:
    """The float mean image as a displayable uint8 image."""
    return np.clip(np.rint(mean), 0, 255).astype(np.uint8)


_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(source: Source) -> np.ndarray:
    """Read an IDX file, the format MNIST is distributed in (uncompressed), into an array."""
    with _open_source(source) as stream:
        data = stream.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise ImagingError("not an IDX file")
    ndim = data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise ImagingError("truncated IDX file: incomplete header")
    dims = struct.unpack_from(f">{ndim}I", data, 4)
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = offset + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        raise ImagingError(f"IDX file has {len(data)} bytes; shape {dims} needs {expected}")
    return np.frombuffer(data, dtype, offset=offset).reshape(dims)
