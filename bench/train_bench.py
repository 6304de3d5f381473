"""How much does training.engine.fit cost over a bare Flax NNX loop?

Two networks: LeNet on MNIST-sized images (scikit-learn digits upscaled to
28x28 and tiled) and the small ResNet (the same digits at 16x16, tinted into
colour images), each with augmentation off and on, batch 64, SGD with
momentum and weight decay, both ways in one process. The bare loop with
augmentation calls the same ``training.augment`` functions inline, so the
ratio measures the platform's overhead, not the augmentation's cost. The
engine runs with every live callback a job uses (metrics, progress, snapshot,
abort polling, the training curve per step). After one uncounted warm-up run
each (compilation), rounds alternate in ABBA order so that drifting machine
load hits both alike. Each
run is one epoch timed end to end, setup included; the median images/second
over the rounds is reported, and the ratio is the median of the rounds'
engine/bare ratios. Neither side validates, so both do the same training
work.

Then the time from the ``fit()`` call to the first finished training step, in
a fresh process each, with the persistent compilation cache cold and warm.

    python -m bench.train_bench [--quick]
"""

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
import optax
from flax import nnx
from PIL import Image
from sklearn.datasets import load_digits

from models import networks
from training import augment, engine, series

BATCH_SIZE = 64
LEARNING_RATE = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
# Built once so every bare run shares a graphdef and reuses the compiled step.
TX = optax.chain(optax.add_decayed_weights(WEIGHT_DECAY), optax.sgd(LEARNING_RATE, momentum=MOMENTUM))

AUGMENT_OFF = engine.Augmentation()
AUGMENT_ON = {
    # Everything that applies: a random crop, flips, small rotations, noise, and HSV shifts for colour.
    "lenet": engine.Augmentation(crop_size=24, flip="fliplr", rotation=10, noise=0.03),
    "resnet": engine.Augmentation(crop_size=14, flip="fliplr", rotation=10, noise=0.03, hsv=True),
}


def load_data(n_images: int, size: int, color: bool) -> engine.ArrayData:
    digits = load_digits()
    small = (digits.images * (255 / 16)).astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in small])
    reps = -(-n_images // len(images))
    x = np.tile(images, (reps, 1, 1))[:n_images, ..., None]
    if color:
        tint = np.random.default_rng(0).uniform(0.3, 1.0, (n_images, 1, 1, 3))
        x = (x * tint).astype(np.uint8)
    y = np.tile(digits.target.astype(np.int32), reps)[:n_images]
    return engine.ArrayData(x, y, x[:0], y[:0], x.mean(axis=0, dtype=np.float32), 10)


# --- (a) bare loop: the minimal idiomatic fast NNX training loop ----------------


@functools.partial(jax.jit, static_argnames="aug", donate_argnums=1)
def bare_step(graphdef, state, x_all, y_all, idx, mean, aug, key=None, step=None):
    model, optimizer = nnx.merge(graphdef, state)
    if aug.is_random:
        x = augment.train_transform(aug, jax.random.fold_in(key, step), x_all[idx], mean)
    else:
        x = (x_all[idx].astype(np.float32) - mean) / 255.0

    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y_all[idx]).mean()

    optimizer.update(model, nnx.grad(loss_fn)(model))
    return nnx.state((model, optimizer))


def run_bare(network: str, data: engine.ArrayData, aug: engine.Augmentation) -> None:
    input_shape = aug.input_shape(data.input_shape)
    model = networks.build_network(network, input_shape, data.num_classes, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split((networks.train_mode(model), nnx.Optimizer(model, TX, wrt=nnx.Param)))
    x_all, y_all, mean = jax.device_put((data.train_x, data.train_y, data.mean))
    key = jax.random.key(0)
    steps = len(data.train_x) // BATCH_SIZE
    order = np.random.default_rng(0).permutation(len(data.train_x))[: steps * BATCH_SIZE]
    for i, idx in enumerate(order.reshape(steps, BATCH_SIZE)):
        if aug.is_random:
            state = bare_step(graphdef, state, x_all, y_all, idx, mean, aug, key, np.int32(i))
        else:
            state = bare_step(graphdef, state, x_all, y_all, idx, mean, aug)
    jax.block_until_ready(state)


# --- (b) the platform engine, with callbacks doing what the job runner does -----


def run_engine(network: str, data: engine.ArrayData, aug: engine.Augmentation) -> None:
    log = []

    def on_epoch(metrics):
        log.append(json.dumps(metrics))

    def on_progress(epoch, step, steps, images_per_second):
        log.append(json.dumps([epoch, step, steps, images_per_second]))

    with tempfile.TemporaryFile() as snapshot_file, tempfile.TemporaryDirectory() as folder:
        steps_file = os.path.join(folder, series.FILE_NAME)

        def on_steps(steps, losses, accuracies, times):
            series.append(steps_file, steps, losses, accuracies, times)
            log.append(json.dumps([steps.tolist(), losses.tolist(), accuracies.tolist()]))

        def on_snapshot(epoch, state_bytes):
            snapshot_file.seek(0)
            snapshot_file.write(state_bytes)

        config = engine.TrainConfig(
            network=network,
            epochs=1,
            batch_size=BATCH_SIZE,
            learning_rate=LEARNING_RATE,
            momentum=MOMENTUM,
            weight_decay=WEIGHT_DECAY,
            augmentation=aug,
        )
        engine.fit(
            data,
            config,
            on_epoch=on_epoch,
            on_progress=on_progress,
            on_snapshot=on_snapshot,
            on_steps=on_steps,
            should_stop=lambda: False,
        )


def images_per_second(run, *args) -> float:
    data = args[1]
    start = time.perf_counter()
    run(*args)
    return len(data.train_x) // BATCH_SIZE * BATCH_SIZE / (time.perf_counter() - start)


def compare(network: str, data: engine.ArrayData, aug: engine.Augmentation, rounds: int, label: str) -> None:
    rates = {run_bare: [], run_engine: []}
    for run in rates:
        run(network, data, aug)  # warm-up: compile
    for round_ in range(rounds):
        for run in (run_bare, run_engine) if round_ % 2 == 0 else (run_engine, run_bare):
            rates[run].append(images_per_second(run, network, data, aug))
    bare, eng = statistics.median(rates[run_bare]), statistics.median(rates[run_engine])
    # The ratio is the median of each round's pair, run back to back: load that
    # drifts between rounds (a shared machine) cancels out of each pair.
    ratio = statistics.median(e / b for e, b in zip(rates[run_engine], rates[run_bare], strict=True))
    print(f"train  {network:<6} {label:<13} bare {bare:6.0f} img/s  engine {eng:6.0f} img/s  ratio {ratio:.2f}")


# --- time to the first step, compilation cache cold and warm ------------------------


def first_step_seconds(network: str, n_images: str, size: str, color: str, cache_dir: str) -> None:
    """Run in a fresh process (arguments as strings): print seconds from fit() to its first finished step."""
    engine.enable_compilation_cache(cache_dir)
    data = load_data(int(n_images), int(size), color == "1")
    first = []
    started = time.perf_counter()

    def on_progress(*_):
        first.append(time.perf_counter() - started)

    config = engine.TrainConfig(network=network, epochs=1, batch_size=BATCH_SIZE)
    engine.fit(data, config, on_progress=on_progress, should_stop=lambda: bool(first))
    print(first[0])


def time_to_first_step(network: str, size: int, color: bool) -> None:
    with tempfile.TemporaryDirectory() as cache_dir:
        seconds = []
        for _ in ("cold", "warm"):
            args = [network, str(BATCH_SIZE * 4), str(size), str(int(color)), cache_dir]
            code = "import sys; from bench.train_bench import first_step_seconds as f; f(*sys.argv[1:])"
            out = subprocess.run(
                [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, env=_env()
            )
            seconds.append(float(out.stdout.split()[-1]))
    print(f"first  {network:<6} fit() to first finished step: cache cold {seconds[0]:.2f} s, warm {seconds[1]:.2f} s")


def _env() -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of well under 30 seconds")
    args = parser.parse_args()
    has_resnet = "resnet" in networks.NETWORKS
    if args.quick:
        cases = [("lenet", 512, 2, True), ("resnet", 256, 2, False)]
    else:
        cases = [("lenet", 4096, 6, True), ("resnet", 2048, 6, True)]

    print(f"device {jax.devices()[0].device_kind}; batch {BATCH_SIZE}; one epoch per run, median of the rounds")
    for network, n_images, rounds, with_augmentation in cases:
        if network == "resnet" and not has_resnet:
            print("train  resnet not available (models.networks has no 'resnet' yet); skipped")
            continue
        size, color = (28, False) if network == "lenet" else (16, True)
        data = load_data(n_images, size, color)
        shape = "x".join(map(str, data.input_shape))
        compare(network, data, AUGMENT_OFF, rounds, "augment off")
        if with_augmentation:
            compare(network, data, AUGMENT_ON[network], rounds, "augment on")
        print(f"       ({n_images} images {shape}, {rounds} rounds)")
    time_to_first_step("lenet", 28, False)
    if has_resnet and not args.quick:
        time_to_first_step("resnet", 16, True)


if __name__ == "__main__":
    main()
