"""Image-classification dataset core: decode, normalise, resize and pack images into .npy files.

Pure Python (numpy + Pillow), no Django: the web app calls :func:`build_dataset` from a background
job and stores the returned :class:`BuildResult`.

The layout on disk is the one NVIDIA DIGITS used: one subfolder per class under the source root.
The output folder holds ``{train,val}_images.npy`` (N, H, W, C) uint8, ``{train,val}_labels.npy`` (N,)
int32, ``mean.npy`` (H, W, C) float32 and ``labels.txt``.  Images are stored sorted by class, then
path: whoever trains on them must shuffle.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import struct
import threading
import time
import uuid
import warnings
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
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
SPLITS = ("train", "val")

_RESAMPLE = Image.Resampling.BILINEAR  # what DIGITS used; Pillow antialiases it when shrinking
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
# What Pillow's decoders raise on damaged data, short of a bug in our own code.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)
_CHUNK_BYTES = 4 << 20  # decoded pixels per worker task: big enough to amortise IPC, small enough to stream
_PROGRESS_INTERVAL = 0.1  # seconds

Source = str | os.PathLike[str] | BinaryIO
ProgressCallback = Callable[[int, int], object]
_Job = tuple[str, list[tuple[str, int]]]  # split name, (path, label) items


class ImagingError(Exception):
    """A problem with the user's images or folders; the message is meant to be shown to them."""


@dataclass
class BuildResult:
    classes: list[str]
    counts: dict[str, list[int]]  # split name -> number of images per class, in class order
    skipped: list[tuple[str, str]]  # (path relative to the source root, reason)
    total_images: int  # images written, all splits together


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


def scan_class_folders(root: str | os.PathLike[str]) -> tuple[list[str], list[tuple[str, int]]]:
    """Find the classes (sorted subfolder names) and (path, label) of every image under them.

    Images are looked for recursively inside each class folder.  Hidden entries and symbolic links
    are skipped, so nothing outside root is ever read.
    """
    root = Path(root)
    if not root.exists():
        raise ImagingError(f"folder {root} does not exist")
    if not root.is_dir():
        raise ImagingError(f"{root} is not a folder")
    class_dirs = sorted(
        (entry for entry in _visible_entries(root) if entry.is_dir(follow_symlinks=False)),
        key=lambda entry: entry.name,
    )
    if not class_dirs:
        raise ImagingError(f"folder {root} has no class subfolders (expected one subfolder per class)")
    classes: list[str] = []
    items: list[tuple[str, int]] = []
    for label, class_dir in enumerate(class_dirs):
        paths = sorted(_image_files(class_dir.path))
        if not paths:
            raise ImagingError(f"class folder '{class_dir.name}' contains no images")
        classes.append(class_dir.name)
        items.extend((path, label) for path in paths)
    return classes, items


def _visible_entries(folder: str | os.PathLike[str]) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return [e for e in entries if not e.name.startswith(".") and not e.is_symlink()]
    except OSError as exc:
        raise ImagingError(f"cannot read folder {folder}: {exc.strerror or exc}") from exc


def _image_files(folder: str) -> Iterator[str]:
    for entry in _visible_entries(folder):
        if entry.is_dir(follow_symlinks=False):
            yield from _image_files(entry.path)
        elif entry.name.rpartition(".")[2].lower() in IMAGE_EXTENSIONS:
            yield entry.path


def split_stratified(
    items: Iterable[tuple[str, int]],
    val_percent: float,
    seed: int,
    *,
    classes: Sequence[str] | None = None,
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Split (path, label) items into (train, val), drawing val_percent of each class at random.

    The same items, percentage and seed always give the same split, and each class is drawn from its
    own random stream, so adding a class leaves the split of the others unchanged.  With
    val_percent > 0 every class gets at least one image in each split.  Items keep their input order
    within a split.  classes, when given, names the labels in error messages.
    """
    if not 0 <= val_percent < 100:
        raise ValueError(f"val_percent must be at least 0 and below 100, got {val_percent!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    by_label: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for item in items:
        by_label[item[1]].append(item)
    train: list[tuple[str, int]] = []
    val: list[tuple[str, int]] = []
    for label, group in sorted(by_label.items()):
        n_val = 0
        if val_percent > 0:
            if len(group) < 2:
                name = classes[label] if classes is not None else f"#{label}"
                raise ImagingError(
                    f"class '{name}' has only {len(group)} image; it needs at least 2 to have one "
                    "for training and one for validation"
                )
            n_val = min(max(1, round(len(group) * val_percent / 100)), len(group) - 1)
        picked = set(np.random.default_rng([seed, label]).permutation(len(group))[:n_val].tolist())
        for index, item in enumerate(group):
            (val if index in picked else train).append(item)
    return train, val


def build_dataset(
    source_root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    width: int,
    height: int,
    channels: int,
    resize_mode: str,
    val_percent: float,
    seed: int = 0,
    progress: ProgressCallback | None = None,
    workers: int | None = None,
) -> BuildResult:
    """Build a dataset from class folders under source_root into out_dir, which must not exist.

    Images are decoded in a pool of `workers` processes (default: one per CPU) and streamed in
    order into the .npy files, so memory use does not grow with the dataset.  Files that
    cannot be decoded are skipped and listed in the result.  Everything is written to a hidden
    sibling folder renamed to out_dir at the end: a build that fails, or is cancelled by raising
    from progress(done, total), leaves nothing behind.
    """
    _check_geometry(width, height, channels, resize_mode)
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers!r}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ImagingError(f"output folder {out_dir} already exists")
    classes, items = scan_class_folders(source_root)
    splits = dict(zip(SPLITS, split_stratified(items, val_percent, seed, classes=classes), strict=True))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        result = _build_into(
            staging,
            Path(source_root),
            classes,
            splits,
            load={"width": width, "height": height, "channels": channels, "resize_mode": resize_mode},
            progress=_throttled(progress, total=len(items)),
            workers=workers or os.cpu_count() or 1,
        )
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return result


def _build_into(
    folder: Path,
    source_root: Path,
    classes: list[str],
    splits: dict[str, list[tuple[str, int]]],
    load: dict,
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
        writers = {
            name: _SplitWriter(stack.enter_context(open(folder / f"{name}_images.npy", "wb")), len(items), shape)
            for name, items in splits.items()
        }
        # Forked workers inherit the common format plugins instead of each importing them.
        Image.preinit()
        # catch_warnings() would cost 8% of decoding a small PNG if load_image set it up per image.
        pool = ProcessPoolExecutor(
            min(workers, len(jobs)), mp_context=_pool_context(), initializer=_refuse_decompression_bombs
        )
        stack.callback(pool.shutdown, cancel_futures=True)
        for (name, chunk), (images, failures) in _decode_in_order(pool, jobs, load, window=4 * workers):
            failed = {index for index, _ in failures}
            writers[name].append(images, [label for i, (_, label) in enumerate(chunk) if i not in failed])
            if name == "train":
                train_sum += images.sum(axis=0, dtype=np.float64)
            skipped += [(Path(chunk[i][0]).relative_to(source_root).as_posix(), reason) for i, reason in failures]
            done += len(chunk)
            progress(done)
        labels = {name: writer.finish() for name, writer in writers.items()}

    if not len(labels["train"]):
        path, reason = skipped[0]
        raise ImagingError(
            f"none of the {len(splits['train'])} training images could be read (first one: {path}: {reason})"
        )
    for name, split_labels in labels.items():
        np.save(folder / f"{name}_labels.npy", split_labels)
    np.save(folder / "mean.npy", (train_sum / len(labels["train"])).astype(np.float32))
    (folder / "labels.txt").write_text("".join(f"{name}\n" for name in classes), encoding="utf-8")
    return BuildResult(
        classes=classes,
        counts={name: np.bincount(lab, minlength=len(classes)).tolist() for name, lab in labels.items()},
        skipped=skipped,
        total_images=sum(len(lab) for lab in labels.values()),
    )


def _pool_context() -> BaseContext:
    # fork starts workers in milliseconds but can deadlock when another thread holds a lock at the
    # moment of the fork (a threaded web server, a job runner's heartbeat...).  Only pay for the
    # safe forkserver when there is such a thread.
    return get_context("fork" if threading.active_count() == 1 else "forkserver")


def _decode_in_order(
    pool: ProcessPoolExecutor, jobs: list[_Job], load: dict, window: int
) -> Iterator[tuple[_Job, tuple[np.ndarray, list[tuple[int, str]]]]]:
    """Yield (job, result) in job order, with at most `window` jobs queued so memory stays bounded."""
    in_flight: deque[tuple[_Job, Future]] = deque()
    for job in jobs:
        in_flight.append((job, pool.submit(_decode_chunk, [path for path, _ in job[1]], load)))
        if len(in_flight) >= window:
            job, future = in_flight.popleft()
            yield job, future.result()
    for job, future in in_flight:
        yield job, future.result()


def _decode_chunk(paths: list[str], load: dict) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Worker: decode paths; return the good images stacked in order and (index, reason) for the rest."""
    images = np.empty((len(paths), load["height"], load["width"], load["channels"]), np.uint8)
    failures: list[tuple[int, str]] = []
    for index, path in enumerate(paths):
        try:
            images[index - len(failures)] = _load(path, **load)
        except ImagingError as exc:
            failures.append((index, str(exc)))
    return images[: len(paths) - len(failures)], failures


def _throttled(progress: ProgressCallback | None, total: int) -> Callable[[int], None]:
    last_call = -math.inf

    def report(done: int) -> None:
        nonlocal last_call
        now = time.monotonic()
        if progress is not None and (done == total or now - last_call >= _PROGRESS_INTERVAL):
            last_call = now
            progress(done, total)

    return report


class _SplitWriter:
    """Appends one split's images, in order, to an .npy file announced for `capacity` of them.

    Plain sequential writes rather than a memory map: a mapping would count every page written
    towards the process's resident memory, so a 50 GB dataset would make the build look 50 GB
    large to the OOM killer.
    """

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

    def finish(self) -> np.ndarray:
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
