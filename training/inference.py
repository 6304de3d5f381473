"""Classify images with a snapshot: the dataset's own preprocessing, the same network
code and the engine's predict. Runs in the web process on the CPU (asgi.py pins JAX to
it); loaded models are kept per snapshot file so the second image is fast. Looking inside
(every layer's output and weights, saliency) is training.inside; this is the glue."""

import base64
import functools
import io
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from datasets import imaging
from training import config

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
    pixels: np.ndarray  # what the network saw: the image after the dataset's preprocessing (and crop)
    layers: list | None = None  # training.inside.LayerView per layer, when asked for
    total_params: int | None = None
    saliency: list = field(default_factory=list)  # training.inside.SaliencyMap: the top class, then the one picked

    @property
    def total_params_text(self):
        return f"{self.total_params:,}"

    def histograms(self):
        """Each layer's histograms, in the order of ``layers``, for the page's charts."""
        return [
            {
                "activations": layer.activations.histogram.as_dict(),
                "weights": layer.weights.histogram.as_dict() if layer.weights else None,
            }
            for layer in self.layers or []
        ]

    def pixels_data_uri(self):
        image = Image.fromarray(self.pixels[..., 0] if self.pixels.shape[-1] == 1 else self.pixels)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def classify(snapshot, image_file, top_k=TOP_K, **views):
    """The top classes for one uploaded image, with the views classify_pixels names.
    Raises imaging.ImagingError for a file that is not a usable image."""
    pixels = imaging.load_image(image_file, **image_options(snapshot.experiment.dataset))
    return classify_pixels(snapshot, pixels, top_k, **views)


def classify_pixels(snapshot, pixels, top_k=TOP_K, *, layers=False, tiles=False, saliency=False, saliency_class=None):
    """The top classes for one image already decoded by image_options (a stored image, one
    an evaluation classified); with ``layers`` every layer's statistics (and with ``tiles``
    its drawings), with ``saliency`` the map of the top class and of class index
    ``saliency_class`` if another. Raises FileNotFoundError when the snapshot's file is gone."""
    from models.networks import describe
    from training import engine, inside

    dataset = snapshot.experiment.dataset
    model, mean, augmentation = predictor(snapshot)
    network, input_shape = _network_of(snapshot.experiment, augmentation)
    mtime = os.stat(snapshot.path).st_mtime_ns
    classification = Classification([], inside.seen_pixels(pixels, augmentation))
    x = inside.network_input(pixels, mean, augmentation)
    if layers:
        summary = describe(network, input_shape, len(dataset.classes))
        weights = _weight_views(snapshot.path, mtime, network, input_shape, len(dataset.classes), tiles)
        probabilities, classification.layers = inside.layer_views(model, summary.rows, x, weights, tiles=tiles)
        classification.total_params = summary.total_params
    else:
        probabilities = engine.predict(model, pixels[np.newaxis], mean, augmentation)[0]
    best = np.argsort(probabilities)[::-1][:top_k]
    classification.predictions = [Prediction(dataset.classes[i], float(probabilities[i])) for i in best]
    if saliency or saliency_class is not None:
        indices = [int(best[0])] + ([saliency_class] if saliency_class not in (None, best[0]) else [])
        classes = [(i, dataset.classes[i]) for i in indices]
        classification.saliency = inside.saliency_maps(model, x, classification.pixels, classes)
    return classification


def image_options(dataset):
    """How the dataset build decoded and resized its images: every image classified goes
    through the same (imaging.load_image, imaging.DecodePool)."""
    return {
        "width": dataset.width,
        "height": dataset.height,
        "channels": dataset.channels,
        "resize_mode": dataset.resize_mode,
    }


def predictor(snapshot):
    """(model, mean image, augmentation): what engine.predict needs to classify images
    preprocessed by image_options, exactly as the run validated. Kept per snapshot file.
    Raises FileNotFoundError when the snapshot's file is gone."""
    experiment = snapshot.experiment
    augmentation = config.augmentation_of(experiment)
    network, input_shape = _network_of(experiment, augmentation)
    # The file's mtime is in the key: a resumed run may write a snapshot of the same epoch again.
    mtime = os.stat(snapshot.path).st_mtime_ns
    model = _load_model(snapshot.path, mtime, network, input_shape, len(experiment.dataset.classes))
    return model, _load_mean(str(experiment.dataset.directory / "mean.npy")), augmentation


def _network_of(experiment, augmentation):
    network = config.network_of(experiment.network, experiment.network_spec)
    return network, augmentation.input_shape(experiment.dataset.image_shape)


@functools.lru_cache(maxsize=8)
def _load_model(path, mtime, network, input_shape, num_classes):
    from training import engine

    with open(path, "rb") as f:
        return engine.load_model(f.read(), network, input_shape, num_classes)


@functools.lru_cache(maxsize=8)
def _weight_views(path, mtime, network, input_shape, num_classes, tiles):
    """Weights do not change with the image: their statistics and tiles are made once per snapshot."""
    from training import inside

    return inside.weight_views(_load_model(path, mtime, network, input_shape, num_classes), tiles=tiles)


@functools.lru_cache(maxsize=8)
def _load_mean(path):
    return np.load(path)
