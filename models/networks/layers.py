"""What each leaf layer type of a spec does: its output shape, parameter
count, FLOPs, a one-line description, and the Flax NNX module that runs it.

Shapes here exclude the batch axis: (height, width, channels) for images,
(features,) for vectors. The shape rules mirror what Flax computes so that a
spec can be checked, with errors pinned to a layer, before any module exists;
``tests/test_networks.py`` holds them to what ``nnx.eval_shape`` reports.

FLOPs are per image for one inference pass. A multiply-add counts as 2;
additions of biases, activations, and elementwise work count 1 per element;
a pooling window costs its size per output element. Dropout costs nothing
(it is off at inference) and batch norm 2 per element (a scale and a shift
once folded).

Adding a layer type: give it a schema in spec.py and a ``LeafType`` here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .spec import Layer

Shape = tuple[int, ...]


def xavier(key, shape, dtype=jnp.float32):
    """Caffe's "xavier" filler, which DIGITS' networks used: uniform with
    variance 1 / fan_in (LeCun uniform, not Glorot).

    Drawn with NumPy, seeded from the key, whenever the key is concrete:
    jax.random compiles a sampler for every new kernel shape, about 0.15 s
    each on a CPU, and GoogLeNet has some sixty shapes; NumPy needs no
    compiling. Under a trace (nnx.eval_shape, jit) the draw stays in JAX, so
    nothing is allocated. Either way it is a function of the key alone.
    """
    limit = math.sqrt(3 / math.prod(shape[:-1]))
    if isinstance(key, jax.core.Tracer):
        return jax.random.uniform(key, shape, dtype, -limit, limit)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    return jnp.asarray((rng.random(shape, np.float32) * (2 * limit) - limit).astype(dtype))


def zeros(key, shape, dtype=jnp.float32):
    """Zero biases, without compiling a fill for every shape (see xavier)."""
    if isinstance(key, jax.core.Tracer):
        return jnp.zeros(shape, dtype)
    return jnp.asarray(np.zeros(shape, dtype))


_ACTIVATIONS = {"relu": nnx.relu, "tanh": nnx.tanh, "sigmoid": nnx.sigmoid}


def activate(x, name: str):
    return x if name == "none" else _ACTIVATIONS[name](x)


def describe_shape(shape: Shape) -> str:
    if len(shape) == 3:
        return "x".join(map(str, shape))
    return f"a vector of {shape[0]}" if len(shape) == 1 else str(shape)


def _image(layer: Layer, shape: Shape) -> Shape:
    if len(shape) != 3:
        raise layer.error(
            f"{layer.type} needs an image-shaped input (height x width x channels), but gets {describe_shape(shape)}."
        )
    return shape


def _sides(padding, kernel, stride, height, width) -> tuple[int, int]:
    """Output height and width, exactly as lax.padtype_to_pads works them out."""
    if padding == "SAME":
        return -(-height // stride[0]), -(-width // stride[1])
    pads = ((0, 0), (0, 0)) if padding == "VALID" else padding
    return tuple(
        (size + sum(pad) - k) // s + 1 for size, pad, k, s in zip((height, width), pads, kernel, stride, strict=True)
    )


def _check_fits(layer: Layer, what: str, window, padding, height: int, width: int) -> None:
    """A window must fit in its input plus explicit padding. SAME padding does
    not count for pools: it exists to cover the edges, and a 3x3 pool "over" a
    2x2 map means the images are too small for the network. A SAME
    convolution may be larger than its input, as GoogLeNet's 5x5 branches
    are on the last maps of a small image: it still mixes every pixel."""
    pads = ((0, 0), (0, 0)) if isinstance(padding, str) else padding
    if layer.type == "conv" and padding == "SAME":
        return
    if window[0] > height + sum(pads[0]) or window[1] > width + sum(pads[1]):
        padded = "" if pads == ((0, 0), (0, 0)) else " (with its padding)"
        raise layer.error(
            f"{layer.type} {what} {window[0]}x{window[1]} is larger than its {height}x{width} input{padded}.",
            too_small=True,
        )


def _pair_text(pair) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def _padding_text(padding) -> str:
    if isinstance(padding, str):
        return padding
    (top, bottom), (left, right) = padding
    return f"pad {top}" if top == bottom == left == right else f"pad {top}x{left}"


# --- the layer types ---------------------------------------------------------------------


class LeafType:
    """Shape, size and module of one layer type. ``p`` is the layer's params
    with ``features: classes`` already resolved to a number."""

    def output_shape(self, layer: Layer, p: Mapping[str, Any], shape: Shape) -> Shape:
        return shape

    def param_count(self, p, shape: Shape, out: Shape) -> int:
        return 0

    def flops(self, p, shape: Shape, out: Shape) -> int:
        return 0

    def detail(self, p) -> str:
        return ""

    def build(self, p, shape: Shape, rngs: nnx.Rngs) -> nnx.Module:
        raise NotImplementedError


class ConvType(LeafType):
    def output_shape(self, layer, p, shape):
        height, width, channels = _image(layer, shape)
        if channels % p["groups"] or p["features"] % p["groups"]:
            raise layer.error(
                f"groups {p['groups']} must divide both the input's {channels} channels "
                f"and the {p['features']} features."
            )
        _check_fits(layer, "kernel", p["kernel"], p["padding"], height, width)
        return (*_sides(p["padding"], p["kernel"], p["stride"], height, width), p["features"])

    def param_count(self, p, shape, out):
        return math.prod(p["kernel"]) * shape[-1] // p["groups"] * p["features"] + p["features"] * p["use_bias"]

    def flops(self, p, shape, out):
        macs = math.prod(p["kernel"]) * shape[-1] // p["groups"] * math.prod(out)
        return 2 * macs + math.prod(out) * (p["use_bias"] + (p["activation"] != "none"))

    def detail(self, p):
        parts = [f"{p['kernel'][0]}x{p['kernel'][1]}"]
        if p["stride"] != (1, 1):
            parts.append(f"stride {_pair_text(p['stride'])}")
        parts.append(_padding_text(p["padding"]))
        if p["groups"] > 1:
            parts.append(f"{p['groups']} groups")
        if p["activation"] != "none":
            parts.append(p["activation"])
        return ", ".join(parts)

    def build(self, p, shape, rngs):
        return Conv(
            shape[-1],
            p["features"],
            p["kernel"],
            p["stride"],
            padding=p["padding"],
            feature_group_count=p["groups"],
            use_bias=p["use_bias"],
            kernel_init=xavier,
            bias_init=zeros,
            activation=p["activation"],
            rngs=rngs,
        )


class DenseType(LeafType):
    def output_shape(self, layer, p, shape):
        if len(shape) != 1:
            raise layer.error(
                f"dense needs a flat input, but gets {describe_shape(shape)} (height x width x channels); "
                "add a flatten or global_avg_pool layer before it."
            )
        return (p["features"],)

    def param_count(self, p, shape, out):
        return shape[0] * p["features"] + p["features"] * p["use_bias"]

    def flops(self, p, shape, out):
        return 2 * shape[0] * p["features"] + p["features"] * (p["use_bias"] + (p["activation"] != "none"))

    def detail(self, p):
        return "" if p["activation"] == "none" else p["activation"]

    def build(self, p, shape, rngs):
        return Dense(
            shape[0],
            p["features"],
            use_bias=p["use_bias"],
            kernel_init=xavier,
            bias_init=zeros,
            activation=p["activation"],
            rngs=rngs,
        )


class PoolType(LeafType):
    def __init__(self, kind: str):
        self.kind = kind

    def output_shape(self, layer, p, shape):
        height, width, channels = _image(layer, shape)
        _check_fits(layer, "window", p["window"], p["padding"], height, width)
        return (*_sides(p["padding"], p["window"], p["stride"], height, width), channels)

    def flops(self, p, shape, out):
        return math.prod(p["window"]) * math.prod(out)

    def detail(self, p):
        parts = [f"{p['window'][0]}x{p['window'][1]}"]
        if p["stride"] != p["window"]:
            parts.append(f"stride {_pair_text(p['stride'])}")
        parts.append(_padding_text(p["padding"]))
        return ", ".join(parts)

    def build(self, p, shape, rngs):
        return Pool(self.kind, p["window"], p["stride"], p["padding"])


class GlobalAvgPoolType(LeafType):
    def output_shape(self, layer, p, shape):
        return (_image(layer, shape)[-1],)

    def flops(self, p, shape, out):
        return math.prod(shape)

    def build(self, p, shape, rngs):
        return GlobalAvgPool()


class AdaptiveAvgPoolType(LeafType):
    def output_shape(self, layer, p, shape):
        return (*p["size"], _image(layer, shape)[-1])

    def flops(self, p, shape, out):
        return math.prod(shape)

    def detail(self, p):
        return f"to {p['size'][0]}x{p['size'][1]}"

    def build(self, p, shape, rngs):
        return AdaptiveAvgPool(p["size"])


class FlattenType(LeafType):
    def output_shape(self, layer, p, shape):
        return (math.prod(shape),)

    def build(self, p, shape, rngs):
        return Flatten()


class ActivationType(LeafType):
    def __init__(self, name: str):
        self.name = name

    def flops(self, p, shape, out):
        return math.prod(shape)

    def build(self, p, shape, rngs):
        return Activation(self.name)


class DropoutType(LeafType):
    def detail(self, p):
        return f"rate {p['rate']:g}"

    def build(self, p, shape, rngs):
        # deterministic=True: built models start in inference mode (see
        # models.networks.train_mode). No rngs here: the key comes with each
        # call, so snapshots hold no RNG state and resumed runs can replay it.
        return nnx.Dropout(p["rate"], deterministic=True)


class BatchNormType(LeafType):
    def param_count(self, p, shape, out):
        return 2 * shape[-1]

    def flops(self, p, shape, out):
        return 2 * math.prod(shape)

    def build(self, p, shape, rngs):
        return nnx.BatchNorm(
            shape[-1], use_running_average=True, momentum=p["momentum"], epsilon=p["epsilon"], rngs=rngs
        )


class LocalResponseNormType(LeafType):
    def output_shape(self, layer, p, shape):
        return _image(layer, shape)

    def flops(self, p, shape, out):
        return (p["size"] + 3) * math.prod(shape)

    def detail(self, p):
        return f"size {p['size']}"

    def build(self, p, shape, rngs):
        return LocalResponseNorm(p["size"], p["alpha"], p["beta"], p["k"])


LEAF_TYPES: dict[str, LeafType] = {
    "conv": ConvType(),
    "dense": DenseType(),
    "max_pool": PoolType("max"),
    "avg_pool": PoolType("avg"),
    "global_avg_pool": GlobalAvgPoolType(),
    "adaptive_avg_pool": AdaptiveAvgPoolType(),
    "flatten": FlattenType(),
    "relu": ActivationType("relu"),
    "tanh": ActivationType("tanh"),
    "sigmoid": ActivationType("sigmoid"),
    "dropout": DropoutType(),
    "batch_norm": BatchNormType(),
    "local_response_norm": LocalResponseNormType(),
}


# --- the modules -------------------------------------------------------------------------
# Parameterless layers are Modules too, so that a network is one nnx.List per
# layer list with the same indices as the spec: state paths such as
# "layers/4/shortcut/0/kernel" read like the spec path layers[4].shortcut[0].


class Conv(nnx.Conv):
    def __init__(self, *args, activation: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.activation = activation

    def __call__(self, x):
        return activate(super().__call__(x), self.activation)


class Dense(nnx.Linear):
    def __init__(self, *args, activation: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.activation = activation

    def __call__(self, x):
        return activate(super().__call__(x), self.activation)


class Pool(nnx.Module):
    def __init__(self, kind: str, window, stride, padding):
        self.kind, self.window, self.stride, self.padding = kind, tuple(window), tuple(stride), padding

    def __call__(self, x):
        if self.kind == "max":
            # By keyword: the ONNX export's tracer (jax2onnx) swaps in a max_pool that takes only these.
            return nnx.max_pool(x, window_shape=self.window, strides=self.stride, padding=self.padding)
        # Padding does not dilute the average: edge windows average what they cover.
        return nnx.avg_pool(x, self.window, self.stride, self.padding, count_include_pad=False)


class GlobalAvgPool(nnx.Module):
    def __call__(self, x):
        return x.mean(axis=(1, 2))


class AdaptiveAvgPool(nnx.Module):
    """torchvision's AdaptiveAvgPool2d: output cell i averages input rows
    floor(i * n / m) .. ceil((i + 1) * n / m), so windows may overlap and a
    smaller input is stretched. Done as two small matrix products with
    weights fixed at trace time."""

    def __init__(self, size):
        self.size = tuple(size)

    def __call__(self, x):
        rows = _averaging_matrix(x.shape[1], self.size[0])
        cols = _averaging_matrix(x.shape[2], self.size[1])
        return jnp.einsum("ih,nhwc,jw->nijc", rows, x, cols)


def _averaging_matrix(n: int, m: int) -> np.ndarray:
    weights = np.zeros((m, n), np.float32)
    for i in range(m):
        start, stop = (i * n) // m, -(-((i + 1) * n) // m)
        weights[i, start:stop] = 1 / (stop - start)
    return weights


class Flatten(nnx.Module):
    def __call__(self, x):
        return x.reshape(x.shape[0], -1)


class Activation(nnx.Module):
    def __init__(self, name: str):
        self.name = name

    def __call__(self, x):
        return activate(x, self.name)


class LocalResponseNorm(nnx.Module):
    """Caffe's LRN across channels: x / (k + alpha / size * sum of x^2 over
    ``size`` neighbouring channels) ^ beta."""

    def __init__(self, size: int, alpha: float, beta: float, k: float):
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def __call__(self, x):
        half = self.size // 2
        window_sum = jax.lax.reduce_window(
            x * x, 0.0, jax.lax.add, (1, 1, 1, self.size), (1, 1, 1, 1), ((0, 0), (0, 0), (0, 0), (half, half))
        )
        return x / (self.k + self.alpha / self.size * window_sum) ** self.beta
