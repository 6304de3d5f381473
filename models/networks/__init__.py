"""Network architectures the platform can train: the standard ones users pick
by name, and custom ones written as declarative specs (see spec.py).

A ``network`` argument here is either a standard name ("lenet", "alexnet",
"googlenet", "resnet") or a spec: YAML/JSON text or an already-parsed
mapping. Errors are ValueErrors (SpecError for spec problems, with the
failing layer's path in ``.layer``) whose message is written for the user.

Importing this package imports JAX and Flax but does not initialise a JAX
backend; building a network does.

Weights sit at paths that follow the spec: layer i of the top-level list is
"layers/i", so LeNet's first kernel is "layers/0/kernel" and a residual's
shortcut convolution "layers/4/shortcut/0/kernel". Kernels start as Caffe's
"xavier" (LeCun uniform), biases at zero, both a function of the Rngs seed.

Train and eval modes
--------------------
Built networks start in eval mode: dropout off, batch norm normalising with
its running statistics. A training step must use the train-mode view and
pass a dropout key::

    model = build_network(network, input_shape, num_classes, rngs=nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    train_def, state = nnx.split((train_mode(model), optimizer))
    eval_def = nnx.graphdef((eval_mode(model), optimizer))  # same state fits both

    @jax.jit
    def train_step(state, x, y, key):
        model, optimizer = nnx.merge(train_def, state)
        def loss_fn(model):
            logits = model(x, rngs=key)  # key: e.g. jax.random.fold_in(run_key, step)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss  # carries the new batch statistics

Evaluation and prediction merge ``eval_def`` and call ``model(x)`` without a
key. Batch norm's running mean and variance are ``nnx.BatchStat`` variables:
they are in ``nnx.state(model)`` (so in snapshots) but not in
``nnx.state(model, nnx.Param)``, which is what the optimizer updates and
``count_params`` counts. No RNG state lives in a model: the key comes with
each call, so a run resumed from a snapshot can replay its dropout masks
by deriving keys from (seed, epoch, step).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import re
from collections.abc import Mapping

import jax
from flax import nnx

from .network import (
    LayerRow,
    NetworkSummary,
    Plan,
    SpecNetwork,
    min_image_size,
    plan_network,
    summarize,
)
from .spec import LAYER_TYPES, Spec, SpecError, error_line, load_text, parse_spec
from .standard import NETWORKS, StandardNetwork

STANDARD_NETWORKS = [(name, network.title) for name, network in NETWORKS.items()]

Network = str | Mapping | Spec

__all__ = [
    "LAYER_TYPES",
    "NETWORKS",
    "STANDARD_NETWORKS",
    "LayerRow",
    "MemoryEstimate",
    "NetworkSummary",
    "Spec",
    "SpecError",
    "SpecNetwork",
    "StandardNetwork",
    "build_network",
    "check_input",
    "count_params",
    "describe",
    "error_line",
    "estimate_memory",
    "eval_mode",
    "parse_spec",
    "standard_spec_text",
    "train_mode",
]

# A network given as a bare word is a name, never spec text.
_NAME = re.compile(r"[\w.-]+")


def build_network(
    network: Network,
    input_shape: tuple[int, int, int],
    num_classes: int,
    *,
    rngs: nnx.Rngs,
) -> SpecNetwork:
    """Instantiate ``network`` for (height, width, channels) images, in eval mode.

    Raises ValueError with a message fit for the end user when the network is
    unknown, its spec is invalid, or it cannot take this input.
    """
    plan, error = _plan(network, input_shape, num_classes)
    if error is not None:
        raise error
    return SpecNetwork(plan, rngs=rngs)


def check_input(network: Network, input_shape: tuple[int, int, int], num_classes: int) -> str | None:
    """Why ``network`` cannot take this dataset, in the user's words, or None.

    Built under ``nnx.eval_shape``: only shapes are traced, no weights are allocated.
    """
    try:
        nnx.eval_shape(lambda: build_network(network, input_shape, num_classes, rngs=nnx.Rngs(0)))
    except ValueError as exc:
        return str(exc)
    return None


def describe(network: Network, input_shape: tuple[int, int, int], num_classes: int) -> NetworkSummary:
    """Every layer's output shape, parameter count and FLOPs, for Visualize.

    Never raises for a bad network: ``summary.error`` holds (layer path or
    None, message) and the rows stop at the failing layer. Shapes and
    parameter counts come from ``nnx.eval_shape``; nothing is allocated.
    """
    if isinstance(network, str):
        # The editor asks again and again about the same text; GoogLeNet
        # takes a few hundred milliseconds to trace. Copies keep the cached
        # summary safe from callers that edit theirs.
        key = (network, tuple(input_shape), num_classes)
        try:
            hash(key)
        except TypeError:
            return _describe(network, input_shape, num_classes)
        return copy.deepcopy(_describe_text(*key))
    return _describe(network, input_shape, num_classes)


@functools.lru_cache(maxsize=64)
def _describe_text(network: str, input_shape: tuple[int, ...], num_classes: int) -> NetworkSummary:
    return _describe(network, input_shape, num_classes)


def _describe(network: Network, input_shape, num_classes: int) -> NetworkSummary:
    try:
        plan, error = _plan(network, input_shape, num_classes)
    except SpecError as exc:
        rows = _rows_before(network, exc, input_shape, num_classes)
        return NetworkSummary(tuple(input_shape), num_classes, rows, None, 0, 0, (exc.layer, exc.message))
    except ValueError as exc:
        return NetworkSummary(tuple(input_shape), num_classes, [], None, 0, 0, (None, str(exc)))
    if error is not None and error is not plan.error:
        # A standard network's own wording, pinned where the plan failed.
        error = SpecError(error.message, plan.error.layer, plan.error.name, too_small=True)
    title = network.title if isinstance(network, StandardNetwork) else None
    if isinstance(network, str) and network in NETWORKS:
        title = NETWORKS[network].title
    return summarize(plan, title=title, error=error)


# Training keeps float32 values.
_BYTES_PER_VALUE = 4


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """What training ``network`` takes in memory, roughly: see ``estimate_memory``."""

    parameters: int
    activations_per_image: int  # values all layers output for one image
    bytes: int


def estimate_memory(
    network: Network, input_shape: tuple[int, int, int], num_classes: int, *, batch_size: int, optimizer_slots: int
) -> MemoryEstimate:
    """The memory one training step needs, before anything is allocated: the weights,
    their gradients and the optimizer's ``optimizer_slots`` values per weight (Adam's two
    moments, SGD's momentum), plus the batch and every layer's outputs three times over:
    kept for the backward pass, their gradients, and the step's working space (XLA's
    plan for LeNet, AlexNet and GoogLeNet steps on the CPU is within a factor of 2 of it).
    Shapes come from Visualize's ``nnx.eval_shape`` summary. Good for refusing what
    cannot fit, not for packing jobs.

    Raises ValueError (as ``build_network``) when the network cannot take this input.
    """
    summary = describe(network, input_shape, num_classes)
    if summary.error is not None:
        raise ValueError(summary.error[1])
    activations = sum(math.prod(row.output_shape) for row in summary.rows if row.output_shape)
    weights = summary.total_params * (2 + optimizer_slots)
    batch = batch_size * (math.prod(input_shape) + 3 * activations)
    return MemoryEstimate(summary.total_params, activations, _BYTES_PER_VALUE * (weights + batch))


def standard_spec_text(name: str, input_shape: tuple[int, ...] | None = None) -> str:
    """YAML spec of standard network ``name``, for the editor ("Customize").

    AlexNet, GoogLeNet and ResNet-20 adapt their first layers to the image size,
    so pass the dataset's shape; the default is the size each was designed
    for. Building the text gives the same network as building ``name``.
    """
    return _standard(name).spec_text(input_shape)


def count_params(model: nnx.Module) -> int:
    """Number of trainable parameters (works on ``nnx.eval_shape`` models too)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))


def train_mode(model: nnx.Module) -> nnx.Module:
    """A view of ``model`` that trains: dropout on, batch norm on batch
    statistics (and updating its running ones). Shares the model's variables."""
    return nnx.view(model, deterministic=False, use_running_average=False, raise_if_not_found=False)


def eval_mode(model: nnx.Module) -> nnx.Module:
    """A view of ``model`` for inference: dropout off, batch norm on running
    statistics. Built networks already are in this mode."""
    return nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)


def _rows_before(network: Network, error: SpecError, input_shape, num_classes: int) -> list[LayerRow]:
    """When a spec does not parse, the rows of the top-level layers before the
    faulty one, then a shapeless row for it: a typo in one layer should not
    blank the whole diagram. The shapes are the planner's (nothing is built)."""
    match = re.match(r"layers\[(\d+)\]", error.layer or "")
    if match is None or isinstance(network, Spec):
        return []
    index = int(match[1])
    try:
        layers = (load_text(network) if isinstance(network, str) else network)["layers"]
        plan = plan_network({"layers": layers[:index]}, input_shape, num_classes) if index else None
    except (SpecError, LookupError, TypeError):
        return []
    rows = plan.rows if plan else []
    if any(row.output_shape is None for row in rows):
        return rows  # an earlier layer fails on shapes too; its row ends the list
    raw = layers[index]
    kind = raw.get("type") if isinstance(raw, Mapping) else None
    rows.append(LayerRow(f"layers[{index}]", error.name, kind if isinstance(kind, str) else "?", 0))
    return rows


def _standard(name: str) -> StandardNetwork:
    try:
        return NETWORKS[name]
    except KeyError:
        known = ", ".join(sorted(NETWORKS))
        raise ValueError(f'Unknown network "{name}". Available networks: {known}.') from None


def _plan(network: Network, input_shape, num_classes: int) -> tuple[Plan, SpecError | None]:
    """The plan for ``network`` on this dataset, and the error to give the
    user for it (None when it fits). Raises ValueError when there is nothing
    to plan: an unknown name, or a spec that does not parse."""
    if isinstance(network, StandardNetwork) or (isinstance(network, str) and _NAME.fullmatch(network.strip())):
        standard = network if isinstance(network, StandardNetwork) else _standard(network.strip())
        plan = standard.plan(tuple(input_shape), num_classes)
        return plan, standard.too_small(plan) or plan.error
    spec = parse_spec(network)
    plan = plan_network(spec, input_shape, num_classes)
    error = plan.error
    if error is not None and error.too_small:
        height, width = plan.input_shape[:2]
        side = min_image_size(spec, plan.input_shape[2], num_classes)
        if side is not None and side > min(height, width):
            error = SpecError(
                f"{error.message} This network needs images of at least {side}x{side} pixels; "
                f"these are {height}x{width}.",
                error.layer,
                error.name,
                too_small=True,
            )
            plan.error = error
    return plan, error
