"""How fast does an evaluation (classify many) go against plain loops doing the same?

LeNet at 28x28 grayscale on the CPU (random weights: the speed does not depend on them),
10,000 images, batches as the engine's predict makes them.

- files: 10,000 MNIST PNGs decoded, resized and classified. Plain: one process decoding
  each batch (imaging.load_image) and then predicting it (engine.predict). Platform:
  evaluations.core.classify_files with imaging.DecodePool, as the job runs it: other
  processes decode while this one predicts, and the top 5 of every image is kept. The pool
  is started once, before JAX starts, as the job starts it (forked: its start, printed
  apart, is a few milliseconds).
- stored: the same count of stored images (a memory-mapped uint8 split). Plain: a bare
  jitted forward pass over slices of the array. Platform: evaluations.core.classify_arrays
  with engine.predict, the top 5 and a progress callback, as the job runs it.

After an uncounted warm-up each, rounds alternate in ABBA order; the median images/s is
printed with the ratio.

    python -m bench.evaluate_bench [--quick]
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from datasets import imaging
from datasets.mnist_sample import prepare_mnist
from evaluations import core
from models import networks
from training import augment, engine

ROOT = Path(__file__).resolve().parent.parent
SHAPE = (28, 28, 1)
LOAD = {"width": 28, "height": 28, "channels": 1, "resize_mode": "squash"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = parser.parse_args()
    count, rounds = (2000, 2) if args.quick else (10_000, 6)

    cache = os.environ.get("MNIST_CACHE_DIR") or ROOT / "var" / "cache"
    source = prepare_mnist(ROOT / "var" / "bench-evaluate", limit=count, cache_dir=cache) / "train"
    paths = sorted(str(path) for path in source.glob("*/*.png"))[:count]
    for path in paths:
        Path(path).read_bytes()  # both sides read from the page cache
    items = [core.Item(path, int(Path(path).parent.name)) for path in paths]

    # As the job does: the decoding processes fork before JAX starts its runtime.
    started = time.perf_counter()
    pool = imaging.DecodePool(**LOAD)
    pool_start = time.perf_counter() - started
    model = networks.build_network("lenet", SHAPE, 10, rngs=nnx.Rngs(0))
    mean = np.full(SHAPE, 33.0, np.float32)
    aug = augment.Augmentation()

    def predict(images):
        return engine.predict(model, images, mean, aug)

    def plain_files():
        batch = engine.PREDICT_BATCH
        for start in range(0, len(paths), batch):
            images = np.stack([imaging.load_image(path, **LOAD) for path in paths[start : start + batch]])
            core.top_k(predict(images))
        return len(paths)

    def platform_files():
        rows, _, _ = core.classify_files(items, pool.batches, predict, progress=lambda done, total: None)
        return len(rows)

    with tempfile.TemporaryDirectory() as scratch:
        stored = np.stack([imaging.load_image(path, **LOAD) for path in paths])
        np.save(Path(scratch) / "images.npy", stored)
        images = np.load(Path(scratch) / "images.npy", mmap_mode="r")
        labels = np.array([item.label for item in items], np.int32)

        graphdef, state = nnx.split(model)
        mean_device = jax.numpy.asarray(mean)

        @jax.jit
        def forward(state, x):
            return jax.nn.softmax(nnx.merge(graphdef, state)((x.astype(jax.numpy.float32) - mean_device) / 255))

        def plain_stored():
            batch = engine.PREDICT_BATCH
            for start in range(0, len(images), batch):
                chunk = np.asarray(images[start : start + batch])
                if len(chunk) < batch:  # one compiled shape, as predict pads
                    chunk = np.concatenate([chunk, np.zeros((batch - len(chunk), *SHAPE), np.uint8)])
                np.asarray(forward(state, chunk))
            return len(images)

        def platform_stored():
            return len(core.classify_arrays(images, labels, predict, progress=lambda done, total: None))

        print(
            f"device {jax.devices()[0].platform}; LeNet 28x28x1, {count} images, {os.cpu_count()} CPUs, "
            f"{rounds} rounds; {pool.workers} decoders started ({pool.start_method}) in {1000 * pool_start:.0f} ms"
        )
        for name, plain, platform in (
            ("files ", plain_files, platform_files),
            ("stored", plain_stored, platform_stored),
        ):
            a, b = compare(plain, platform, rounds)
            print(f"evaluate {name}  plain {a:7.0f} img/s  platform {b:7.0f} img/s  ratio {b / a:.2f}")
    pool.__exit__(None, None, None)


def compare(plain, platform, rounds):
    rates = {plain: [], platform: []}
    for run in rates:
        run()  # warm-up: compilation, imports
    for round_ in range(rounds):
        for run in (plain, platform) if round_ % 2 == 0 else (platform, plain):
            start = time.perf_counter()
            done = run()
            rates[run].append(done / (time.perf_counter() - start))
    return statistics.median(rates[plain]), statistics.median(rates[platform])


if __name__ == "__main__":
    main()
