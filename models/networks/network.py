"""From a validated spec to a network: shape planning, the NNX module, and
the per-layer summary that Visualize draws.

``plan_network`` walks a spec against a dataset's (height, width, channels)
and class count with pure-Python shape rules (layers.py). It stops at the
first layer that cannot work and pins the error there, keeping the rows
planned so far. ``SpecNetwork`` builds the Flax NNX module from a plan, and
``summarize`` reports each layer's output shape and parameter count as
``nnx.eval_shape`` traces them through the real modules: nothing is
allocated, and the rule-based plan is checked against JAX by the tests.

Modes. Built networks start in inference mode: dropout off and batch norm
using its running statistics, so predictions never depend on the batch. To
train, take a view with ``models.networks.train_mode(model)``; both views
share their variables, so one ``nnx.split`` state serves both graphdefs.
Dropout draws from the ``rngs`` passed to each call (a key, or an
``nnx.Rngs`` with a ``dropout`` or default stream), never from state kept
in the model.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from .layers import LEAF_TYPES, Shape, activate, describe_shape
from .spec import CLASSES, Layer, Spec, SpecError, parse_spec

# One billion float32 weights, plus their gradients and optimizer moments,
# already fill a large accelerator; past it a spec is surely a mistake (a
# dense layer on an unpooled image) that would only fail later, on a worker.
MAX_PARAMS = 1_000_000_000
# Values one layer may output per image (512 MiB of float32): a batch of such
# activations, kept for the backward pass, would not fit any accelerator.
MAX_VALUES = 2**27


@dataclasses.dataclass
class LayerRow:
    """One layer of a network summary.

    ``path`` is the layer's place in the spec ("layers[5].branches[1][0]");
    ``depth`` counts how deep it is nested. A branches or residual row comes
    before the rows of the layers inside it, and its params and flops include
    theirs. ``output_shape`` excludes the batch axis; it is None for the layer
    that failed. ``flops`` are per image, a multiply-add counting 2 (see
    layers.py).
    """

    path: str
    name: str | None
    type: str
    depth: int
    detail: str = ""
    output_shape: Shape | None = None
    params: int = 0
    flops: int = 0


@dataclasses.dataclass
class _Node:
    layer: Layer
    params: Mapping  # the layer's params with features: classes resolved
    input_shape: Shape
    blocks: tuple[tuple[_Node, ...], ...]


@dataclasses.dataclass
class Plan:
    input_shape: tuple[int, int, int]
    num_classes: int
    nodes: tuple[_Node, ...]
    rows: list[LayerRow]
    output_shape: Shape | None
    error: SpecError | None

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error


@dataclasses.dataclass
class NetworkSummary:
    """What Visualize shows. ``error`` is (layer path or None, message); when
    set, ``rows`` stop at the failing layer, and the totals count the rows
    present."""

    input_shape: tuple[int, ...]
    num_classes: int
    rows: list[LayerRow]
    output_shape: Shape | None
    total_params: int
    total_flops: int
    error: tuple[str | None, str] | None = None
    title: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# --- planning ---------------------------------------------------------------------------


def check_dataset(input_shape, num_classes) -> None:
    """Raise SpecError (not pinned to a layer) for an impossible dataset."""
    if len(input_shape) != 3 or not all(_whole(n) and n >= 1 for n in input_shape):
        raise SpecError(f"Images must have a height, width and channel count of at least 1; got {tuple(input_shape)}.")
    if not _whole(num_classes) or num_classes < 2:
        raise SpecError(f"A classifier needs at least 2 classes; this dataset has {num_classes}.")


def _whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def plan_network(spec: Spec | Mapping | str, input_shape, num_classes: int) -> Plan:
    """Shapes, parameter counts and FLOPs of every layer, without JAX.

    Never raises for a problem in the spec's layers: the plan's ``error``
    holds it and ``rows`` end at the failing layer. Text that does not parse
    raises SpecError, as ``parse_spec`` does.
    """
    spec = parse_spec(spec)
    input_shape = tuple(int(n) if _whole(n) else n for n in input_shape)
    num_classes = int(num_classes) if _whole(num_classes) else num_classes
    planner = _Planner(spec, num_classes)
    nodes, shape = (), None
    try:
        check_dataset(input_shape, num_classes)
        nodes, shape = planner.plan(spec.layers, input_shape, depth=0)
        _check_output(spec, shape, num_classes)
    except SpecError as exc:
        return Plan(input_shape, num_classes, tuple(nodes), planner.rows, None, exc)
    return Plan(input_shape, num_classes, nodes, planner.rows, shape, None)


class _Planner:
    def __init__(self, spec: Spec, num_classes: int):
        self.num_classes = num_classes
        self.last_dense = spec.last_dense
        self.rows: list[LayerRow] = []
        self.total_params = 0

    def plan(self, layers, shape: Shape, depth: int) -> tuple[tuple[_Node, ...], Shape]:
        nodes = []
        for layer in layers:
            node, shape = self.plan_layer(layer, shape, depth)
            nodes.append(node)
        return tuple(nodes), shape

    def plan_layer(self, layer: Layer, shape: Shape, depth: int) -> tuple[_Node, Shape]:
        # The row goes in before the shape is known, so that a failure leaves
        # it (with no output shape) for the error to point at.
        row = LayerRow(layer.path, layer.name, layer.type, depth)
        self.rows.append(row)
        params = self.resolve(layer)
        if layer.type == "branches":
            blocks, out, row.params, row.flops = self.plan_branches(layer, shape, depth)
        elif layer.type == "residual":
            blocks, out, row.params, row.flops = self.plan_residual(layer, params, shape, depth)
        else:
            kind = LEAF_TYPES[layer.type]
            blocks, out = (), kind.output_shape(layer, params, shape)
            row.detail = kind.detail(params)
            row.params = kind.param_count(params, shape, out)
            row.flops = kind.flops(params, shape, out)
            self.total_params += row.params
            if self.total_params > MAX_PARAMS:
                raise layer.error(
                    f"With this layer the network has {self.total_params:,} parameters; the limit is "
                    f"{MAX_PARAMS:,}. Pool or shrink what comes before it, or use fewer features."
                )
        if math.prod(out) > MAX_VALUES:
            raise layer.error(
                f"This layer outputs {describe_shape(out)} = {math.prod(out):,} values per image; the limit is "
                f"{MAX_VALUES:,}. Downsample (stride, pooling) before it, or use fewer features."
            )
        row.output_shape = out
        return _Node(layer, params, shape, blocks), out

    def resolve(self, layer: Layer) -> Mapping:
        features = layer.params.get("features", 0)
        if features == CLASSES:
            return {**layer.params, "features": self.num_classes}
        if features is None:
            if layer.path != self.last_dense:
                raise layer.error(
                    'dense needs a "features" parameter; only the last dense layer may leave it out '
                    "(it then gets one output per class)."
                )
            return {**layer.params, "features": self.num_classes}
        return layer.params

    def plan_branches(self, layer: Layer, shape: Shape, depth: int):
        blocks, outs = [], []
        for block in layer.blocks:
            nodes, out = self.plan(block, shape, depth + 1)
            blocks.append(nodes)
            outs.append(out)
        if any(len(out) != len(outs[0]) or out[:-1] != outs[0][:-1] for out in outs):
            listed = ", ".join(f"{describe_shape(out)} (branches[{i}])" for i, out in enumerate(outs))
            raise layer.error(
                "branches are concatenated on the channel axis, so they must agree on everything else; "
                f"they give {listed}."
            )
        out = (*outs[0][:-1], sum(out[-1] for out in outs))
        params, flops = self.subtotals(layer.blocks)
        return tuple(blocks), out, params, flops

    def plan_residual(self, layer: Layer, params, shape: Shape, depth: int):
        main_nodes, main = self.plan(layer.blocks[0], shape, depth + 1)
        shortcut_nodes, shortcut = self.plan(layer.blocks[1], shape, depth + 1)
        if main != shortcut:
            added = "the shortcut's output" if layer.blocks[1] else "its input (there is no shortcut)"
            raise layer.error(
                f"residual adds its layers' output to {added}, so the shapes must match, but they are "
                f"{describe_shape(main)} and {describe_shape(shortcut)}.{_projection_hint(main, shortcut)}"
            )
        sub_params, sub_flops = self.subtotals(layer.blocks)
        flops = sub_flops + math.prod(main) * (1 + (params["activation"] != "none"))
        return (main_nodes, shortcut_nodes), main, sub_params, flops

    def subtotals(self, blocks) -> tuple[int, int]:
        """Params and FLOPs of the rows directly inside a composite layer."""
        inside = {layer.path for block in blocks for layer in block}
        rows = [row for row in self.rows if row.path in inside]
        return sum(row.params for row in rows), sum(row.flops for row in rows)


def _projection_hint(main: Shape, shortcut: Shape) -> str:
    """The 1x1 convolution that would reshape ``shortcut`` into ``main``, when there is one."""
    if len(main) != 3 or len(shortcut) != 3 or shortcut[0] % main[0] or shortcut[1] % main[1]:
        return ""
    stride = (shortcut[0] // main[0], shortcut[1] // main[1])
    stride_text = "" if stride == (1, 1) else f", stride: {stride[0] if stride[0] == stride[1] else list(stride)}"
    return f" Project the shortcut: shortcut: [{{type: conv, features: {main[-1]}, kernel: 1{stride_text}}}]."


def _check_output(spec: Spec, shape: Shape, num_classes: int) -> None:
    last = spec.layers[-1]
    if len(shape) != 1:
        raise last.error(
            f"The network must end with one score per class (a vector of {num_classes}), but it ends with "
            f"{describe_shape(shape)}; end with flatten or global_avg_pool and then a dense layer."
        )
    if shape[0] == num_classes:
        return
    dense = next((layer for layer in spec.walk() if layer.path == spec.last_dense), None)
    if dense is not None and dense.params["features"] not in (None, CLASSES, num_classes):
        raise dense.error(
            f"The last dense layer has {dense.params['features']} outputs but the dataset has {num_classes} "
            "classes; set features: classes (or leave features out)."
        )
    raise last.error(
        f"The network ends with {shape[0]} values per image but the dataset has {num_classes} classes; "
        "end with a dense layer (features: classes)."
    )


def min_image_size(spec: Spec, channels: int = 3, num_classes: int = 2, limit: int = 4096) -> int | None:
    """Smallest square image side the spec accepts, or None up to ``limit``.

    Assumes that a spec which fits some size fits every bigger one, which
    holds for convolutions and pools with fixed strides.
    """

    def fits(side: int) -> bool:
        error = plan_network(spec, (side, side, channels), num_classes).error
        return error is None or not error.too_small

    if fits(1):
        return 1
    low, high = 1, 2
    while not fits(high):
        low, high = high, high * 2
        if high > limit:
            return None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high


# --- the module ---------------------------------------------------------------------------


class Branches(nnx.Module):
    def __init__(self, branches: list[list[nnx.Module]]):
        self.branches = nnx.List([nnx.List(branch) for branch in branches])


class Residual(nnx.Module):
    def __init__(self, layers: list[nnx.Module], shortcut: list[nnx.Module], activation: str):
        self.layers = nnx.List(layers)
        self.shortcut = nnx.List(shortcut)
        self.activation = activation


class SpecNetwork(nnx.Module):
    """The Flax NNX module a spec describes, sized for one dataset.

    Takes NHWC float images and returns unnormalised logits (N, classes).
    Raises SpecError (a ValueError) if the spec does not fit the dataset.
    """

    def __init__(
        self,
        spec: Spec | Mapping | str | Plan,
        input_shape: tuple[int, int, int] | None = None,
        num_classes: int | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        plan = spec if isinstance(spec, Plan) else plan_network(spec, input_shape, num_classes)
        plan.raise_error()
        self.layers = nnx.List([_build(node, rngs) for node in plan.nodes])

    def __call__(self, x, *, rngs: nnx.Rngs | jax.Array | None = None):
        """``rngs`` feeds dropout in training mode: a PRNG key, or an
        nnx.Rngs whose ``dropout`` (or default) stream is drawn once per
        dropout layer."""
        return _run(self.layers, x, _Call(rngs), "layers")

    def layer_outputs(self, x) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The logits and every layer's output keyed by its spec path ("layers[3]",
        "layers[5].branches[1][0]"), the paths of Visualize's rows; composite layers
        have their combined output too. For looking inside a network in eval mode."""
        outputs = {}
        logits = _run(self.layers, x, _Call(None, outputs=outputs), "layers")
        return logits, outputs

    def layer_modules(self) -> dict[str, nnx.Module]:
        """Every layer's module keyed by the same spec paths as ``layer_outputs``."""
        found = {}
        _walk(self.layers, "layers", found)
        return found


def _walk(modules: nnx.List, prefix: str, found: dict) -> None:
    for i, module in enumerate(modules):
        path = f"{prefix}[{i}]"
        found[path] = module
        if isinstance(module, Branches):
            for j, branch in enumerate(module.branches):
                _walk(branch, f"{path}.branches[{j}]", found)
        elif isinstance(module, Residual):
            _walk(module.layers, f"{path}.layers", found)
            _walk(module.shortcut, f"{path}.shortcut", found)


def _build(node: _Node, rngs: nnx.Rngs) -> nnx.Module:
    blocks = [[_build(child, rngs) for child in block] for block in node.blocks]
    if node.layer.type == "branches":
        return Branches(blocks)
    if node.layer.type == "residual":
        return Residual(*blocks, node.params["activation"])
    return LEAF_TYPES[node.layer.type].build(node.params, node.input_shape, rngs)


class _Call:
    """What one forward pass carries: dropout randomness, for summaries a
    record of each layer's output shape and parameter count by path, and for
    looking inside a network each layer's output by path."""

    def __init__(self, rngs, record: dict | None = None, outputs: dict | None = None):
        if isinstance(rngs, jax.Array):
            # One key for every dropout layer would give them all the same mask.
            rngs = nnx.Rngs(dropout=rngs)
        self.rngs = rngs
        self.record = record
        self.outputs = outputs


def _run(modules: nnx.List, x, call: _Call, prefix: str):
    for i, module in enumerate(modules):
        path = f"{prefix}[{i}]"
        if isinstance(module, Branches):
            outs = [_run(branch, x, call, f"{path}.branches[{j}]") for j, branch in enumerate(module.branches)]
            x = jnp.concatenate(outs, axis=-1)
        elif isinstance(module, Residual):
            main = _run(module.layers, x, call, f"{path}.layers")
            x = activate(main + _run(module.shortcut, x, call, f"{path}.shortcut"), module.activation)
        elif isinstance(module, nnx.Dropout):
            if not module.deterministic and call.rngs is None:
                raise ValueError(
                    "This network has dropout and is in training mode: pass rngs= (a PRNG key or an nnx.Rngs) "
                    "to each call, or use models.networks.eval_mode for inference."
                )
            # Without a key in eval mode: the identity, as the ONNX export's tracer (jax2onnx),
            # whose own dropout takes no rngs, also sees it.
            x = module(x) if module.deterministic else module(x, rngs=call.rngs)
        else:
            x = module(x)
        if call.record is not None:
            call.record[path] = (tuple(x.shape[1:]), _count_params(module))
        if call.outputs is not None:
            call.outputs[path] = x
    return x


def _count_params(module: nnx.Module) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nnx.state(module, nnx.Param)))


# --- the summary ---------------------------------------------------------------------------


def summarize(plan: Plan, *, title: str | None = None, error: SpecError | None = None) -> NetworkSummary:
    """Visualize's view of a plan. When the plan has no error, each row's
    output shape and parameter count are replaced by what ``nnx.eval_shape``
    measures on the real modules. ``error`` overrides the plan's message
    (the standard networks word their too-small errors their own way)."""
    if plan.error is None:
        record = {}

        def trace():
            model = SpecNetwork(plan, rngs=nnx.Rngs(0))
            _run(model.layers, jnp.zeros((1, *plan.input_shape), jnp.float32), _Call(None, record), "layers")

        nnx.eval_shape(trace)
        for row in plan.rows:
            row.output_shape, row.params = record[row.path]
    top = [row for row in plan.rows if row.depth == 0]
    error = error or plan.error
    return NetworkSummary(
        input_shape=plan.input_shape,
        num_classes=plan.num_classes,
        rows=plan.rows,
        output_shape=top[-1].output_shape if plan.error is None and top else None,
        total_params=sum(row.params for row in top),
        total_flops=sum(row.flops for row in top),
        error=None if error is None else (error.layer, error.message),
        title=title,
    )
