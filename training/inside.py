"""Look inside a network on one image, as DIGITS' "classify one" did, and a saliency map.

For every layer of the spec (the rows Visualize lists, named the same way): its output's
mean, standard deviation and histogram, drawn as tiles (one grayscale tile per channel of
an image-shaped output, one grid of cells for a vector); for every layer with weights, the
same for its weights (the kernel, or batch norm's scale, as DIGITS showed a layer's first
parameter blob) with the convolution kernels drawn as tiles.

Saliency is SmoothGrad (Smilkov et al., 2017): the gradient of the chosen class's score
(the logit, so other classes do not leak in through the softmax) with respect to the
network's input, its absolute value taken as the largest over the colour channels, and
averaged over noisy copies of the image. A gradient exists for every spec, with or without
convolutions, and it is as fine as the input, where Grad-CAM would need a convolution and
give the last one's few cells (4x4 on LeNet's 28x28 digits). Plain gradients are speckled;
the averaging over noise keeps what survives small changes of the image. The noise is
seeded, so the same image gives the same map.

Pure: no Django. The web process runs it on the CPU; ``training.inference`` is the glue.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import io
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from training import augment

HISTOGRAM_BINS = 20
MAX_TILES = 256  # channels drawn per layer; GoogLeNet's widest layers have 1024
MAX_TILE_SIDE = 64  # larger maps are subsampled: the grid stays small and quick to encode
SALIENCY_SAMPLES = 16
SALIENCY_NOISE = 0.15  # noise standard deviation, as a fraction of the input's range
OVERLAY_SIDE = 112  # small images are enlarged to about this for the overlay


@dataclasses.dataclass
class Histogram:
    counts: list[int]
    edges: list[float]

    def as_dict(self) -> dict:
        return {"counts": self.counts, "edges": self.edges}


@dataclasses.dataclass
class Statistics:
    """Of the finite values (a diverged activation may hold inf; JSON cannot)."""

    mean: float | None
    std: float | None
    histogram: Histogram

    @classmethod
    def of(cls, values) -> Statistics:
        values = np.asarray(values, np.float64).ravel()
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return cls(None, None, Histogram([0] * HISTOGRAM_BINS, np.linspace(0, 1, HISTOGRAM_BINS + 1).tolist()))
        counts, edges = np.histogram(finite, bins=HISTOGRAM_BINS)
        return cls(float(finite.mean()), float(finite.std()), Histogram(counts.tolist(), edges.tolist()))

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "histogram": self.histogram.as_dict()}


@dataclasses.dataclass
class Tiles:
    """Maps laid out in a grid, one pixel of white between them."""

    image: np.ndarray  # uint8, (height, width) or (height, width, 3)
    count: int  # tiles drawn
    total: int  # tiles there were (more than count when capped at MAX_TILES)
    columns: int
    tile_shape: tuple[int, int]

    def data_url(self) -> str:
        return png_data_url(self.image)

    @property
    def display_width(self) -> int:
        """CSS pixels to show it at: small grids enlarged (pixelated), large ones fitted."""
        width = self.image.shape[1]
        return min(280, width * max(1, min(16, 280 // width)))


@dataclasses.dataclass
class LayerView:
    path: str
    name: str | None
    type: str
    depth: int
    detail: str
    shape: tuple[int, ...]
    params: int
    activations: Statistics
    weights: Statistics | None = None
    weight_shape: tuple[int, ...] | None = None
    activation_tiles: Tiles | None = None
    weight_tiles: Tiles | None = None

    @property
    def label(self) -> str:
        """What Visualize calls the layer: its name in the spec, else its path."""
        return self.name or self.path

    @property
    def params_text(self) -> str:
        return f"{self.params:,}"

    @property
    def shape_text(self) -> str:
        return "×".join(map(str, self.shape))

    @property
    def weight_shape_text(self) -> str:
        return "×".join(map(str, self.weight_shape or ()))

    def as_dict(self, tiles: bool) -> dict:
        data = {
            "path": self.path,
            "name": self.label,
            "type": self.type,
            "depth": self.depth,
            "shape": list(self.shape),
            "params": self.params,
            **self.activations.as_dict(),
            "weights": None,
        }
        if self.weights is not None:
            data["weights"] = {"shape": list(self.weight_shape), **self.weights.as_dict()}
        if tiles:
            data["tiles"] = self.activation_tiles.data_url() if self.activation_tiles else None
            if self.weights is not None:
                data["weights"]["tiles"] = self.weight_tiles.data_url() if self.weight_tiles else None
        return data


@dataclasses.dataclass
class WeightView:
    statistics: Statistics
    shape: tuple[int, ...]
    tiles: Tiles | None


@dataclasses.dataclass
class SaliencyMap:
    index: int
    label: str
    values: np.ndarray  # (height, width) of the network's input, >= 0
    overlay: str  # PNG data URL: the heat map blended over the image as the network saw it
    map: str  # PNG data URL: the map alone, grayscale

    def as_dict(self) -> dict:
        return {"index": self.index, "label": self.label, "overlay": self.overlay, "map": self.map}


# --- running the network ---------------------------------------------------------------


def network_input(pixels: np.ndarray, mean, augmentation: augment.Augmentation) -> np.ndarray:
    """(1, H, W, C) float32: one uint8 image after the run's validation transform."""
    return np.asarray(
        augment.eval_transform(augmentation, pixels[np.newaxis], augment.resolve_mean(augmentation, mean))
    )


def seen_pixels(pixels: np.ndarray, augmentation: augment.Augmentation) -> np.ndarray:
    """The uint8 image cut as the network receives it (the centre crop, if any)."""
    if augmentation.crop_size is None:
        return pixels
    return np.asarray(augment.center_crop(pixels[np.newaxis], augmentation.crop_size)[0])


def layer_outputs(model, x: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Class probabilities (N, classes) and every layer's output by spec path."""
    graphdef, state = nnx.split(model)
    probabilities, outputs = _forward(graphdef, state, jnp.asarray(x))
    return jax.device_get((probabilities, outputs))


@jax.jit
def _forward(graphdef, state, x):
    logits, outputs = nnx.merge(graphdef, state).layer_outputs(x)
    return jax.nn.softmax(logits), outputs


def layer_views(model, rows, x: np.ndarray, weights: dict[str, WeightView], *, tiles: bool):
    """(probabilities, one LayerView per row of ``rows``, Visualize's LayerRows)."""
    probabilities, outputs = layer_outputs(model, x)
    views = []
    for row in rows:
        output = outputs[row.path][0]
        weight = weights.get(row.path)
        views.append(
            LayerView(
                path=row.path,
                name=row.name,
                type=row.type,
                depth=row.depth,
                detail=row.detail,
                shape=tuple(output.shape),
                params=row.params,
                activations=Statistics.of(output),
                weights=weight.statistics if weight else None,
                weight_shape=weight.shape if weight else None,
                activation_tiles=activation_tiles(output) if tiles else None,
                weight_tiles=weight.tiles if weight and tiles else None,
            )
        )
    return probabilities[0], views


def weight_views(model, *, tiles: bool) -> dict[str, WeightView]:
    """The weights of every layer that has some, by spec path. They do not change with
    the image, so a caller may keep these per snapshot."""
    views = {}
    first = True
    for path, module in model.layer_modules().items():
        param = getattr(module, "kernel", None)
        if param is None:
            param = getattr(module, "scale", None)
        if not isinstance(param, nnx.Param):
            continue
        values = np.asarray(param[...])
        drawn = None
        if tiles and values.ndim == 4:
            drawn = kernel_tiles(values, as_image=first)
        if values.ndim == 4:
            first = False
        views[path] = WeightView(Statistics.of(values), values.shape, drawn)
    return views


# --- tiles -------------------------------------------------------------------------------


def activation_tiles(output: np.ndarray) -> Tiles:
    """One grayscale tile per channel of an (H, W, C) output; a vector as one grid of
    cells. Normalised over the whole layer, as DIGITS' vis_square was, so channels
    compare: a dead channel is dark, not stretched into noise."""
    if output.ndim == 3:
        maps = np.moveaxis(output, -1, 0)
    else:
        flat = output.ravel()
        side = math.ceil(math.sqrt(flat.size))
        padded = np.full(side * side, np.nan, np.float32)
        padded[: flat.size] = flat
        maps = padded.reshape(1, side, side)
    return _grid(maps)


def kernel_tiles(kernel: np.ndarray, *, as_image: bool) -> Tiles:
    """A convolution kernel (kh, kw, inputs, outputs), one tile per output channel. The
    first convolution's kernels read as small images (colour for RGB input); deeper ones
    show the mean over their input channels, the spatial pattern they share."""
    if as_image and kernel.shape[2] in (1, 3):
        maps = np.moveaxis(kernel, -1, 0)  # (outputs, kh, kw, inputs)
        maps = maps[..., 0] if kernel.shape[2] == 1 else maps
    else:
        maps = np.moveaxis(kernel.mean(axis=2), -1, 0)
    return _grid(maps)


def _grid(maps: np.ndarray) -> Tiles:
    """(n, h, w) or (n, h, w, 3) floats -> one uint8 grid, normalised over all of it;
    NaN (the unused cells of a vector's square) is drawn white."""
    total = len(maps)
    maps = maps[:MAX_TILES].astype(np.float32)
    step = math.ceil(max(maps.shape[1:3]) / MAX_TILE_SIDE)
    if step > 1:
        maps = maps[:, ::step, ::step]
    finite = maps[np.isfinite(maps)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    scaled = (maps - low) / (high - low) if high > low else np.zeros_like(maps)
    scaled = np.where(np.isfinite(scaled), scaled, 1.0)
    n, h, w = maps.shape[:3]
    columns = math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    grid = np.ones((rows * (h + 1) - 1, columns * (w + 1) - 1, *maps.shape[3:]), np.float32)
    for i in range(n):
        top, left = (i // columns) * (h + 1), (i % columns) * (w + 1)
        grid[top : top + h, left : left + w] = scaled[i]
    return Tiles(np.round(grid * 255).astype(np.uint8), n, total, columns, (h, w))


def png_data_url(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# --- saliency ----------------------------------------------------------------------------


def saliency(model, x: np.ndarray, index: int, *, samples: int = SALIENCY_SAMPLES, seed: int = 0) -> np.ndarray:
    """SmoothGrad map (H, W) of class ``index`` for one network input ``x`` (1, H, W, C)."""
    graphdef, state = nnx.split(model)
    key = jax.random.key(seed)
    return np.asarray(_smoothgrad(graphdef, state, jnp.asarray(x), jnp.int32(index), key, samples))


@functools.partial(jax.jit, static_argnums=5)
def _smoothgrad(graphdef, state, x, index, key, samples):
    spread = SALIENCY_NOISE * (jnp.max(x) - jnp.min(x))
    noisy = x + spread * jax.random.normal(key, (samples, *x.shape[1:]), x.dtype)

    def score(inputs):
        # Images do not interact in eval mode, so the sum's gradient is each image's own.
        return nnx.merge(graphdef, state)(inputs)[:, index].sum()

    gradients = jax.grad(score)(noisy)
    return jnp.abs(gradients).max(axis=-1).mean(axis=0)


# Anchors of a black-body ramp (dark red through yellow to white), a heat map's usual look.
_HEAT = np.array([[0, 0, 0], [120, 0, 0], [230, 60, 0], [255, 200, 0], [255, 255, 255]], np.float32)


def overlay(pixels: np.ndarray, values: np.ndarray) -> tuple[str, str]:
    """(overlay, map) PNG data URLs: the map blended over the uint8 image (H, W, C) the
    network saw, where it is hot, and the map alone in grayscale."""
    height, width = values.shape
    top = float(values.max())
    strength = values / top if top > 0 else np.zeros_like(values)
    scale = max(1, min(8, OVERLAY_SIDE // max(height, width)))
    size = (width * scale, height * scale)
    # The image keeps its pixels (what the network saw); the map is smoothed between them.
    base = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB")
    base = base.resize(size, Image.Resampling.NEAREST)
    heat = np.asarray(Image.fromarray(strength.astype(np.float32)).resize(size, Image.Resampling.BILINEAR))
    heat = np.clip(heat, 0, 1)
    position = heat * (len(_HEAT) - 1)
    lower = np.floor(position).astype(int).clip(0, len(_HEAT) - 2)
    fraction = (position - lower)[..., None]
    colours = _HEAT[lower] * (1 - fraction) + _HEAT[lower + 1] * fraction
    alpha = 0.8 * heat[..., None]
    blended = np.asarray(base, np.float32) * (1 - alpha) + colours * alpha
    map_image = np.round(strength * 255).astype(np.uint8)
    return png_data_url(np.clip(blended, 0, 255).astype(np.uint8)), png_data_url(map_image)


def saliency_maps(model, x: np.ndarray, pixels: np.ndarray, classes: list[tuple[int, str]]) -> list[SaliencyMap]:
    maps = []
    for index, label in classes:
        values = saliency(model, x, index)
        overlay_url, map_url = overlay(pixels, values)
        maps.append(SaliencyMap(index, label, values, overlay_url, map_url))
    return maps
