"""What does looking inside cost on top of classifying one image?

LeNet at 28x28 (a scikit-learn digit, upscaled and sent as a PNG), on the CPU as the web
process runs it: decoding and preprocessing the upload, then either the engine's predict
(the plain top 5) or the per-layer view: one forward pass that keeps every layer's
output, their statistics and histograms, with and without the tiles drawn as PNGs. The
weights' statistics and tiles do not depend on the image; the web process makes them once
per snapshot, so the first image of a snapshot pays them (shown apart) and later ones do
not. Saliency (SmoothGrad, two classes) is timed on its own. After one uncounted warm-up
each (compilation), rounds alternate the variants; the median of the rounds is printed,
and the added time against the plain classification measured in the same rounds.

    python -m bench.classify_bench [--quick]
"""

import argparse
import io
import statistics
import time

import jax
import numpy as np
from flax import nnx
from PIL import Image
from sklearn.datasets import load_digits

from datasets import imaging
from models import networks
from training import augment, engine, inside

INPUT_SHAPE = (28, 28, 1)


def digit_png() -> bytes:
    image = Image.fromarray((load_digits().images[0] * (255 / 16)).astype(np.uint8)).resize((28, 28))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = parser.parse_args()
    rounds = 10 if args.quick else 60

    model = networks.build_network("lenet", INPUT_SHAPE, 10, rngs=nnx.Rngs(0))
    rows = networks.describe("lenet", INPUT_SHAPE, 10).rows
    mean = np.full(INPUT_SHAPE, 33.0, np.float32)
    aug = augment.Augmentation()
    upload = digit_png()

    def decode():
        return imaging.load_image(io.BytesIO(upload), width=28, height=28, channels=1, resize_mode="squash")

    def plain():
        engine.predict(model, decode()[np.newaxis], mean, aug)

    cached = {tiles: inside.weight_views(model, tiles=tiles) for tiles in (False, True)}

    def layers(tiles):
        def run():
            pixels = decode()
            _, views = inside.layer_views(
                model, rows, inside.network_input(pixels, mean, aug), cached[tiles], tiles=tiles
            )
            # What the API sends: tiles encoded as PNG data URLs.
            [view.as_dict(tiles=tiles) for view in views]

        return run

    def first_image():
        pixels = decode()
        weights = inside.weight_views(model, tiles=True)
        _, views = inside.layer_views(model, rows, inside.network_input(pixels, mean, aug), weights, tiles=True)
        [view.as_dict(tiles=True) for view in views]

    def saliency():
        pixels = decode()
        inside.saliency_maps(model, inside.network_input(pixels, mean, aug), pixels, [(0, "0"), (1, "1")])

    variants = {
        "plain": plain,
        "layers": layers(False),
        "layers + tiles": layers(True),
        "first image": first_image,
        "saliency": saliency,
    }
    times = {name: [] for name in variants}
    for run in variants.values():
        run()  # warm-up: compile
    for round_ in range(rounds):
        order = list(variants.items())
        for name, run in order if round_ % 2 == 0 else reversed(order):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)

    ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
    base = ms["plain"]
    print(f"device {jax.devices()[0].device_kind}; LeNet 28x28x1, one PNG upload per call, median of {rounds} rounds")
    labels = {
        "plain": "plain top 5",
        "layers": "+ layers",
        "layers + tiles": "+ layers and tiles",
        "first image": "+ layers and tiles, new snapshot",
        "saliency": "+ saliency of 2 classes",
    }
    for name, label in labels.items():
        added = "" if name == "plain" else f"  ({ms[name] - base:+.1f} ms)"
        print(f"classify lenet  {label:<33} {ms[name]:6.1f} ms{added}")
    print(f"classify lenet  the per-layer view adds {ms['layers + tiles'] - base:.1f} ms (goal: under 100 ms)")


if __name__ == "__main__":
    main()
