"""Classify images with a snapshot: the dataset's own preprocessing, the same network
code and the engine's predict. Runs in the web process on the CPU (asgi.py pins JAX to
it); loaded models are kept per snapshot file so the second image is fast."""

import base64
import functools
import io
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from datasets import imaging
from training.models import Experiment

TOP_K = 5


@dataclass
class Prediction:
    label: str
    probability: float

    @property
    def percent(self):
        return 100 * self.probability


@dataclass
class Classification:
    predictions: list[Prediction]
    pixels: np.ndarray  # what the network saw: the image after the dataset's preprocessing

    def pixels_data_uri(self):
        image = Image.fromarray(self.pixels[..., 0] if self.pixels.shape[-1] == 1 else self.pixels)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def classify(snapshot, image_file, top_k=TOP_K):
    """The top classes for one uploaded image. Raises imaging.ImagingError for a file
    that is not a usable image."""
    from training import engine

    experiment = snapshot.experiment
    dataset = experiment.dataset
    pixels = imaging.load_image(
        image_file,
        width=dataset.width,
        height=dataset.height,
        channels=dataset.channels,
        resize_mode=dataset.resize_mode,
    )
    augmentation = engine.Augmentation(**experiment.options.get("augmentation", {}))
    network = experiment.network_spec if experiment.network == Experiment.Network.CUSTOM else experiment.network
    input_shape = augmentation.input_shape(dataset.image_shape)
    # The file's mtime is in the key: a resumed run may write a snapshot of the same epoch again.
    mtime = os.stat(snapshot.path).st_mtime_ns
    model = _load_model(snapshot.path, mtime, network, input_shape, len(dataset.classes))
    mean = _load_mean(str(dataset.directory / "mean.npy"))
    probabilities = engine.predict(model, pixels[np.newaxis], mean, augmentation)[0]
    best = np.argsort(probabilities)[::-1][:top_k]
    return Classification([Prediction(dataset.classes[i], float(probabilities[i])) for i in best], pixels)


@functools.lru_cache(maxsize=8)
def _load_model(path, mtime, network, input_shape, num_classes):
    from training import engine

    with open(path, "rb") as f:
        return engine.load_model(f.read(), network, input_shape, num_classes)


@functools.lru_cache(maxsize=8)
def _load_mean(path):
    return np.load(path)
