"""How much does training.engine.fit cost over a bare Flax NNX loop?

Trains LeNet on MNIST-sized images (scikit-learn digits upscaled to 28x28 and
tiled) with batch 64 and SGD momentum 0.01, both ways in one process. After
one uncounted warm-up run each (compilation), rounds alternate in ABBA order
so that drifting machine load hits both alike. Each run is one epoch timed end
to end, setup included; the median images/second over the rounds is reported.
Neither side validates, so both do the same training work.

    python -m bench.train_bench [--quick]
"""

import argparse
import functools
import json
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from PIL import Image
from sklearn.datasets import load_digits

from models.networks import build_network
from training import engine

BATCH_SIZE = 64
LEARNING_RATE = 0.01
MOMENTUM = 0.9
# Built once so every bare run shares a graphdef and reuses the compiled step.
TX = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)


def load_data(n_images: int) -> engine.ArrayData:
    digits = load_digits()
    small = (digits.images * (255 / 16)).astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(im).resize((28, 28), Image.BILINEAR)) for im in small])
    reps = -(-n_images // len(images))
    x = np.tile(images, (reps, 1, 1))[:n_images, ..., None]
    y = np.tile(digits.target.astype(np.int32), reps)[:n_images]
    return engine.ArrayData(x, y, x[:0], y[:0], x.mean(axis=0, dtype=np.float32), 10)


# --- (a) bare loop: the minimal idiomatic fast NNX training loop ----------------


@functools.partial(jax.jit, donate_argnums=1)
def bare_step(graphdef, state, x_all, y_all, idx, mean):
    model, optimizer = nnx.merge(graphdef, state)
    x = (x_all[idx].astype(jnp.float32) - mean) / 255.0

    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y_all[idx]).mean()

    optimizer.update(model, nnx.grad(loss_fn)(model))
    return nnx.state((model, optimizer))


def run_bare(data: engine.ArrayData) -> None:
    model = build_network("lenet", data.input_shape, data.num_classes, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split((model, nnx.Optimizer(model, TX, wrt=nnx.Param)))
    x_all, y_all, mean = jax.device_put((data.train_x, data.train_y, data.mean))
    steps = len(data.train_x) // BATCH_SIZE
    order = np.random.default_rng(0).permutation(len(data.train_x))[: steps * BATCH_SIZE]
    for idx in order.reshape(steps, BATCH_SIZE):
        state = bare_step(graphdef, state, x_all, y_all, idx, mean)
    jax.block_until_ready(state)


# --- (b) the platform engine, with callbacks doing what the job runner does -----


def run_engine(data: engine.ArrayData) -> None:
    log = []

    def on_epoch(metrics):
        log.append(json.dumps(metrics))

    with tempfile.TemporaryFile() as snapshot_file:

        def on_snapshot(epoch, state_bytes):
            snapshot_file.seek(0)
            snapshot_file.write(state_bytes)

        config = engine.TrainConfig(epochs=1, batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE)
        engine.fit(data, config, on_epoch=on_epoch, on_snapshot=on_snapshot, should_stop=lambda: False)


def images_per_second(run, data: engine.ArrayData) -> float:
    start = time.perf_counter()
    run(data)
    return len(data.train_x) // BATCH_SIZE * BATCH_SIZE / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds' smoke run")
    args = parser.parse_args()
    n_images, rounds = (2048, 2) if args.quick else (8192, 8)

    data = load_data(n_images)
    print(f"device {jax.devices()[0].device_kind}; {n_images} images 28x28x1, batch {BATCH_SIZE}, {rounds} rounds")
    rates = {run_bare: [], run_engine: []}
    for run in rates:
        run(data)  # warm-up: compile
    for round_ in range(rounds):
        for run in (run_bare, run_engine) if round_ % 2 == 0 else (run_engine, run_bare):
            rates[run].append(images_per_second(run, data))
    bare, eng = statistics.median(rates[run_bare]), statistics.median(rates[run_engine])
    print(f"train  lenet  bare {bare:.0f} img/s  engine {eng:.0f} img/s  ratio {eng / bare:.2f}")


if __name__ == "__main__":
    main()
