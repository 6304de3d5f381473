"""Networks as data: the declarative spec users edit, and its parser.

Users describe a network in YAML (or JSON, which is YAML too) instead of
Python, so a spec can be stored, shown, diffed and checked without running
anyone's code. This module turns spec text into a validated ``Spec`` tree; it
knows nothing about shapes or JAX. ``network.py`` plans shapes against a
dataset and builds the Flax NNX module; ``layers.py`` holds each layer type.

The format
----------

A mapping with a ``layers`` list (and an optional ``name``). Each layer is a
mapping with a ``type``, an optional ``name`` (shown in diagrams and error
messages) and the parameters of that type. Layers run in order; the input is
the dataset's images as (height, width, channels) and the output must be one
score per class. Channel and input counts are never written: each layer takes
them from the layer before it, so one spec fits any dataset. A full example
that uses every construct::

    # Comments are welcome.
    name: Small inception-residual net
    layers:
      - {type: conv, name: stem, features: 32, kernel: 3, activation: relu}
      - {type: max_pool, window: 2}
      - type: branches            # run side by side, concatenate channels
        name: mixed
        branches:
          - - {type: conv, features: 16, kernel: 1, activation: relu}
          - - {type: conv, features: 16, kernel: 1, activation: relu}
            - {type: conv, features: 24, kernel: 3, activation: relu}
          - - {type: max_pool, window: 3, stride: 1, padding: SAME}
            - {type: conv, features: 8, kernel: 1, activation: relu}
      - type: residual            # relu(layers(x) + shortcut(x))
        layers:
          - {type: conv, features: 64, kernel: 3, stride: 2, use_bias: false}
          - {type: batch_norm}
          - {type: relu}
          - {type: conv, features: 64, kernel: 3, use_bias: false}
          - {type: batch_norm}
        shortcut:                 # leave out for the identity
          - {type: conv, features: 64, kernel: 1, stride: 2, use_bias: false}
          - {type: batch_norm}
      - {type: global_avg_pool}
      - {type: dropout, rate: 0.5}
      - {type: dense}             # the last dense layer: one output per class

Layer types and their parameters (defaults in brackets):

=================== =========================================================
conv                features (a count, or ``classes``), kernel, stride [1],
                    padding [SAME], groups [1], use_bias [true],
                    activation [none]
dense               features (a count or ``classes``; may be left out on the
                    last dense layer only, meaning the class count),
                    use_bias [true], activation [none]
max_pool, avg_pool  window, stride [= window], padding [VALID]
global_avg_pool     (none): averages each channel over the whole image
adaptive_avg_pool   size: averages down to a fixed size x size grid, whatever
                    the image size (as torchvision's AlexNet does before fc6)
flatten             (none)
relu, tanh, sigmoid (none)
dropout             rate (0 up to, not including, 1)
batch_norm          momentum [0.9], epsilon [1e-5]
local_response_norm size [5], alpha [1e-4], beta [0.75], k [1.0]
                    (Caffe's across-channel LRN, as in AlexNet and GoogLeNet)
branches            branches: a list of layer lists, run on the same input;
                    outputs are concatenated on the channel axis (an empty
                    list passes the input through)
residual            layers, shortcut [identity], activation [relu]: output is
                    activation(layers(x) + shortcut(x))
=================== =========================================================

``kernel``, ``stride``, ``window`` and ``size`` take a number or a
``[height, width]`` pair. ``padding`` is ``SAME`` (output = ceil(input /
stride)), ``VALID`` (no padding), or a number of pixels (or a ``[height,
width]`` pair) added on each side, as Caffe's ``pad``. ``activation`` is one
of relu, tanh, sigmoid, none. Kernels start from Caffe's "xavier" (LeCun
uniform), which DIGITS' networks used; biases start at zero.

Errors are ``SpecError``s whose ``layer`` is the path of the layer at fault,
written as in the spec: ``layers[3]``, ``layers[5].branches[1][0]``,
``layers[4].shortcut[0]``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

# A spec is small; these bounds keep a hostile one (a YAML alias bomb, a
# megabyte of layers) from tying up the web process that validates it.
MAX_TEXT_CHARS = 256 * 1024
MAX_LAYERS = 2000
MAX_DEPTH = 16
MAX_GRID = 256

ACTIVATIONS = ("relu", "tanh", "sigmoid", "none")
CLASSES = "classes"


class SpecError(ValueError):
    """A spec the user must fix; the message is written for them.

    ``layer`` is the path of the layer at fault ("layers[5].branches[1][0]"),
    or None when the problem is not one layer's (bad YAML, a missing
    ``layers`` list). ``name`` is that layer's name, if the spec gave one.
    ``too_small`` marks errors that bigger images would not have.
    """

    def __init__(
        self,
        message: str,
        layer: str | None = None,
        name: str | None = None,
        *,
        too_small: bool = False,
        line: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.layer = layer
        self.name = name
        self.too_small = too_small
        self.line = line  # 1-based, where the text could not be read (bad YAML or JSON)

    def __str__(self) -> str:
        if self.layer is None:
            return self.message
        where = f"{self.layer} ({self.name})" if self.name else self.layer
        return f"{where}: {self.message}"


# --- the validated tree ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layer:
    """One validated layer. ``params`` has every parameter, defaults filled in
    and values normalised (pairs as tuples, padding as "SAME", "VALID" or
    ((top, bottom), (left, right))). ``blocks`` holds the nested layer lists:
    one per branch for ``branches``, (layers, shortcut) for ``residual``."""

    type: str
    path: str
    name: str | None
    params: Mapping[str, Any]
    blocks: tuple[tuple[Layer, ...], ...] = ()

    def error(self, message: str, **kwargs) -> SpecError:
        return SpecError(message, self.path, self.name, **kwargs)

    def walk(self):
        """This layer, then every layer nested in it, in spec order."""
        yield self
        for block in self.blocks:
            for layer in block:
                yield from layer.walk()


@dataclasses.dataclass(frozen=True)
class Spec:
    layers: tuple[Layer, ...]
    name: str | None = None

    def walk(self):
        for layer in self.layers:
            yield from layer.walk()

    @property
    def last_dense(self) -> str | None:
        """Path of the last dense layer: the one whose features may be left out."""
        paths = [layer.path for layer in self.walk() if layer.type == "dense"]
        return paths[-1] if paths else None


# --- parameter kinds -------------------------------------------------------------
# Each validator takes the raw value and returns the normalised one, or raises
# ValueError with the sentence that follows "<param> must be".

REQUIRED = object()


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def count(value):
    if not _whole(value) or value < 1:
        raise ValueError("a whole number of at least 1")
    return value


def count_or_classes(value):
    if value == CLASSES:
        return CLASSES
    if not _whole(value) or value < 1:
        raise ValueError(f"a whole number of at least 1, or {CLASSES} (the dataset's class count)")
    return value


def pair(value):
    if _whole(value) and value >= 1:
        return (value, value)
    if isinstance(value, list | tuple) and len(value) == 2 and all(_whole(v) and v >= 1 for v in value):
        return tuple(value)
    raise ValueError("a whole number of at least 1, or a [height, width] pair of them")


def grid(value):
    """A pooled grid's side: bounded, since adaptive pooling builds a matrix per side."""
    sides = pair(value)
    if max(sides) > MAX_GRID:
        raise ValueError(f"at most {MAX_GRID} (or a [height, width] pair of such numbers)")
    return sides


def padding(value):
    if isinstance(value, str) and value.upper() in ("SAME", "VALID"):
        return value.upper()
    if _whole(value) and value >= 0:
        return ((value, value), (value, value))
    if isinstance(value, list | tuple) and len(value) == 2 and all(_whole(v) and v >= 0 for v in value):
        return ((value[0], value[0]), (value[1], value[1]))
    raise ValueError("SAME, VALID, or the pixels added on each side (a number or a [height, width] pair)")


def rate(value):
    if not _real(value) or not 0 <= value < 1:
        raise ValueError("a number from 0 up to (not including) 1")
    return float(value)


def positive(value):
    if not _real(value) or not value > 0:
        raise ValueError("a number greater than 0")
    return float(value)


def fraction(value):
    if not _real(value) or not 0 <= value <= 1:
        raise ValueError("a number from 0 to 1")
    return float(value)


def odd_count(value):
    if not _whole(value) or value < 1 or value % 2 == 0:
        raise ValueError("an odd whole number (1, 3, 5, ...)")
    return value


def boolean(value):
    if not isinstance(value, bool):
        raise ValueError("true or false")
    return value


def activation(value):
    if value is None:  # a YAML null ("activation: null" or "~") means none too
        return "none"
    if value not in ACTIVATIONS:
        raise ValueError(f"one of {', '.join(ACTIVATIONS)}")
    return value


@dataclasses.dataclass(frozen=True)
class LayerSchema:
    """The parameters a layer type accepts: name -> (validator, default)."""

    params: Mapping[str, tuple[Callable[[Any], Any], Any]]
    blocks: tuple[str, ...] = ()  # nested layer-list parameters, for composites


_CONV_LIKE = {"use_bias": (boolean, True), "activation": (activation, "none")}

SCHEMAS: dict[str, LayerSchema] = {
    "conv": LayerSchema(
        {
            "features": (count_or_classes, REQUIRED),
            "kernel": (pair, REQUIRED),
            "stride": (pair, (1, 1)),
            "padding": (padding, "SAME"),
            "groups": (count, 1),
            **_CONV_LIKE,
        }
    ),
    # features defaults to None: only the last dense layer may leave it out,
    # which the planner checks since it needs the whole spec to know.
    "dense": LayerSchema({"features": (count_or_classes, None), **_CONV_LIKE}),
    "max_pool": LayerSchema({"window": (pair, REQUIRED), "stride": (pair, None), "padding": (padding, "VALID")}),
    "avg_pool": LayerSchema({"window": (pair, REQUIRED), "stride": (pair, None), "padding": (padding, "VALID")}),
    "global_avg_pool": LayerSchema({}),
    "adaptive_avg_pool": LayerSchema({"size": (grid, REQUIRED)}),
    "flatten": LayerSchema({}),
    "relu": LayerSchema({}),
    "tanh": LayerSchema({}),
    "sigmoid": LayerSchema({}),
    "dropout": LayerSchema({"rate": (rate, REQUIRED)}),
    "batch_norm": LayerSchema({"momentum": (fraction, 0.9), "epsilon": (positive, 1e-5)}),
    "local_response_norm": LayerSchema(
        {"size": (odd_count, 5), "alpha": (positive, 1e-4), "beta": (positive, 0.75), "k": (positive, 1.0)}
    ),
    "branches": LayerSchema({}, blocks=("branches",)),
    "residual": LayerSchema({"activation": (activation, "relu")}, blocks=("layers", "shortcut")),
}

LAYER_TYPES = tuple(sorted(SCHEMAS))


# --- text -> Python ----------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe YAML that reads 1e-4 as a number and refuses duplicate keys.

    YAML 1.1 (PyYAML) wants a dot in floats, so ``alpha: 1e-4`` would load as
    the string "1e-4"; JSON and YAML 1.2 read a number. A key given twice
    would silently keep the last value, hiding a typo.

    Pure Python on purpose: libyaml (CSafeLoader) is ten times faster but
    overflows the C stack, killing the process, on a few kilobytes of deeply
    nested "- - - ...", where Python raises RecursionError. A spec still
    parses in milliseconds.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _construct_mapping(loader, node, deep=False):
    loader.flatten_mapping(node)
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.MarkedYAMLError(
                problem=f'"{key}" is given twice in the same mapping (first on line {seen[key] + 1})',
                problem_mark=mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_text(text: str) -> Any:
    """Parse spec text as JSON when it looks like JSON, else as YAML.

    JSON gets its own parser so that its errors read as JSON errors (and its
    numbers as JSON numbers); both give line and column.
    """
    if len(text) > MAX_TEXT_CHARS:
        raise SpecError(f"The spec is {len(text):,} characters long; the limit is {MAX_TEXT_CHARS:,}.")
    try:
        if text.lstrip().startswith(("{", "[")):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                # Flow-style YAML starts with "{" too; only call it bad JSON
                # if YAML cannot read it either.
                try:
                    return _load_yaml(text)
                except SpecError:
                    pass
                raise SpecError(
                    f"Not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}.", line=exc.lineno
                ) from None
        return _load_yaml(text)
    except RecursionError:
        raise SpecError("The spec is nested too deeply to read.") from None


def _load_yaml(text: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader: plain data only, never objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise SpecError(f"Not valid YAML{where}: {problem}.", line=mark.line + 1 if mark else None) from None


def error_line(text: str, layer: str | None) -> int | None:
    """The line of ``text`` (1-based) an error is about, for the editor to mark: where layer
    ``layer`` (a path such as "layers[5].branches[1][0]") starts, or, for an error of no
    layer, where the text could not be read. None when the text does not tell."""
    if layer is None:
        try:
            load_text(text)
        except SpecError as exc:
            return exc.line
        return None
    try:
        node = yaml.compose(text, Loader=_Loader)  # JSON is YAML too; nodes keep their lines
    except (yaml.YAMLError, RecursionError):
        return None
    for key, index in re.findall(r"(\w+)|\[(\d+)\]", layer):
        if key and isinstance(node, yaml.MappingNode):
            node = next((value for name, value in node.value if name.value == key), None)
        elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
            node = node.value[int(index)]
        else:
            return None
        if node is None:
            return None
    return node.start_mark.line + 1


# --- Python -> validated Spec --------------------------------------------------------


def parse_spec(source: str | Mapping | Spec) -> Spec:
    """Validate a spec given as YAML/JSON text or an already-parsed mapping.

    Checks the structure, layer types, parameter names and values; shapes
    need a dataset and are checked by ``network.plan_network``. Raises SpecError.
    """
    if isinstance(source, Spec):
        return source
    data = load_text(source) if isinstance(source, str) else source
    if data is None:
        raise SpecError("The spec is empty; it needs a layers list.")
    if not isinstance(data, Mapping):
        raise SpecError(
            "The spec must be a mapping with a layers list, such as "
            "{layers: [{type: flatten}, {type: dense}]}; got " + _describe_value(data) + "."
        )
    unknown = sorted(set(map(str, data)) - {"layers", "name"})
    if unknown:
        raise SpecError(
            f'Unknown top-level key "{unknown[0]}"{_suggest(unknown[0], ("layers", "name"))}. '
            "A spec has a layers list and an optional name."
        )
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise SpecError(f"name must be text; got {_describe_value(name)}.")
    if "layers" not in data:
        raise SpecError("The spec has no layers list.")
    budget = [MAX_LAYERS]
    layers = _parse_layers(data["layers"], "layers", depth=0, budget=budget, allow_empty=False)
    return Spec(layers, name)


def _parse_layers(value, path: str, *, depth: int, budget: list[int], allow_empty: bool) -> tuple[Layer, ...]:
    if depth > MAX_DEPTH:
        raise SpecError(f"Layers are nested more than {MAX_DEPTH} deep.", path)
    if not isinstance(value, list):
        raise SpecError(f"{_last(path)} must be a list of layers; got {_describe_value(value)}.", path)
    if not value and not allow_empty:
        raise SpecError(f"{_last(path)} is empty; it needs at least one layer.", path)
    return tuple(_parse_layer(item, f"{path}[{i}]", depth=depth, budget=budget) for i, item in enumerate(value))


def _parse_layer(item, path: str, *, depth: int, budget: list[int]) -> Layer:
    budget[0] -= 1
    if budget[0] < 0:
        raise SpecError(f"The spec has more than {MAX_LAYERS} layers.", path)
    if not isinstance(item, Mapping):
        raise SpecError(
            "Each layer must be a mapping such as {type: conv, features: 32, kernel: 3}; "
            f"got {_describe_value(item)}.",
            path,
        )
    name = item.get("name")
    if name is not None and not isinstance(name, str | int):
        raise SpecError(f"name must be text; got {_describe_value(name)}.", path)
    name = None if name is None else str(name)
    kind = item.get("type")
    if kind is None:
        raise SpecError(f"This layer has no type. Known types: {', '.join(LAYER_TYPES)}.", path, name)
    if kind == "softmax":
        raise SpecError(
            "Leave softmax out: the network must output raw class scores (logits); "
            "training and classification apply softmax themselves.",
            path,
            name,
        )
    schema = SCHEMAS.get(kind) if isinstance(kind, str) else None
    if schema is None:
        raise SpecError(
            f'Unknown layer type "{kind}"{_suggest(kind, LAYER_TYPES)}. Known types: {", ".join(LAYER_TYPES)}.',
            path,
            name,
        )
    allowed = ("type", "name", *schema.params, *schema.blocks)
    for key in item:
        if key not in allowed:
            raise SpecError(
                f'{kind} has no parameter "{key}"{_suggest(key, allowed)}. Allowed: {", ".join(sorted(allowed))}.',
                path,
                name,
            )
    params = {}
    for key, (validate, default) in schema.params.items():
        if key not in item:
            if default is REQUIRED:
                raise SpecError(f'{kind} needs a "{key}" parameter.', path, name)
            params[key] = default
            continue
        try:
            params[key] = validate(item[key])
        except ValueError as exc:
            raise SpecError(f"{key} must be {exc}; got {_describe_value(item[key])}.", path, name) from None
    if kind in ("max_pool", "avg_pool") and params["stride"] is None:
        params["stride"] = params["window"]

    blocks: tuple[tuple[Layer, ...], ...] = ()
    if kind == "branches":
        if "branches" not in item:
            raise SpecError("branches needs a branches list: one list of layers per branch.", path, name)
        branches = item["branches"]
        if not isinstance(branches, list) or len(branches) < 2:
            raise SpecError(
                f"branches must be a list of at least 2 layer lists; got {_describe_value(branches)}.", path, name
            )
        blocks = tuple(
            _parse_layers(branch, f"{path}.branches[{i}]", depth=depth + 1, budget=budget, allow_empty=True)
            for i, branch in enumerate(branches)
        )
    elif kind == "residual":
        if "layers" not in item:
            raise SpecError("residual needs a layers list (its main path).", path, name)
        main = _parse_layers(item["layers"], f"{path}.layers", depth=depth + 1, budget=budget, allow_empty=False)
        shortcut = _parse_layers(
            item.get("shortcut", []), f"{path}.shortcut", depth=depth + 1, budget=budget, allow_empty=True
        )
        blocks = (main, shortcut)
    return Layer(kind, path, name, params, blocks)


def _last(path: str) -> str:
    """The parameter a path ends in: "layers[2].shortcut" -> "shortcut"."""
    return re.sub(r"\[\d+\]$", "", path.rsplit(".", 1)[-1])


def _describe_value(value) -> str:
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    text = json.dumps(value) if isinstance(value, str | bool | int | float) or value is None else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# Names other frameworks (Caffe, Keras, PyTorch, Flax) use for the same thing.
_ALIASES = {
    "bias": "use_bias",
    "conv2d": "conv",
    "convolution": "conv",
    "fc": "dense",
    "filters": "features",
    "group": "groups",
    "inner_product": "dense",
    "innerproduct": "dense",
    "kernel_size": "kernel",
    "linear": "dense",
    "lrn": "local_response_norm",
    "maxpool": "max_pool",
    "avgpool": "avg_pool",
    "batchnorm": "batch_norm",
    "concat": "branches",
    "inception": "branches",
    "num_output": "features",
    "out_channels": "features",
    "out_features": "features",
    "p": "rate",
    "pad": "padding",
    "pool_size": "window",
    "strides": "stride",
    "units": "features",
    "window_shape": "window",
}


def _suggest(word, choices: Sequence[str]) -> str:
    word = str(word)
    alias = _ALIASES.get(word.lower().replace("-", "_"))
    close = [alias] if alias in choices else difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


# --- Python -> YAML text ----------------------------------------------------------------
# The standard networks are written with this, so the text "Customize" puts
# in the editor is exactly what build_network builds. Simple layers go on one
# line each, in flow style; branches and residuals nest in block style.

# Text that YAML reads back as the same string in flow and block style alike.
_PLAIN = re.compile(r"^[A-Za-z_](?:[A-Za-z0-9_./()+ -]*[A-Za-z0-9_.)])?$")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


def to_yaml(layers: Sequence[Mapping | str], *, name: str | None = None, header: str = "") -> str:
    """YAML text for a spec. Strings among ``layers`` become comment lines
    in place; ``header`` becomes the comment block at the top."""
    lines = [f"# {line}".rstrip() for line in header.strip().splitlines()] if header.strip() else []
    if name is not None:
        lines.append(f"name: {_scalar(name)}")
    lines.append("layers:")
    lines.extend(_layer_lines(layers, "  "))
    return "\n".join(lines) + "\n"


def _layer_lines(layers: Sequence[Mapping | str], indent: str) -> list[str]:
    lines = []
    for layer in layers:
        if isinstance(layer, str):
            lines.extend(f"{indent}# {line}".rstrip() for line in layer.splitlines())
            continue
        nested = [key for key in layer if isinstance(layer[key], list) and key in ("branches", "layers", "shortcut")]
        if not nested:
            lines.append(f"{indent}- {_flow(layer)}")
            continue
        inner = indent + "  "
        keys = [key for key in layer if key not in nested]
        lines.append(f"{indent}- {keys[0]}: {_scalar(layer[keys[0]])}")
        lines.extend(f"{inner}{key}: {_scalar(layer[key])}" for key in keys[1:])
        for key in nested:
            if key == "branches":
                lines.append(f"{inner}branches:")
                for branch in layer[key]:
                    lines.extend(_branch_lines(branch, inner + "  "))
            elif layer[key]:
                lines.append(f"{inner}{key}:")
                lines.extend(_layer_lines(layer[key], inner + "  "))
            else:
                lines.append(f"{inner}{key}: []")
    return lines


def _branch_lines(branch: Sequence[Mapping | str], indent: str) -> list[str]:
    """A branch is a list inside the branches list: "- - layer" then "  - layer"."""
    body = _layer_lines(branch, indent + "  ")
    first = next((i for i, line in enumerate(body) if line.lstrip().startswith("- ")), None)
    if first is None:
        return [*body, f"{indent}- []"]
    body[first] = f"{indent}- {body[first].lstrip()}"
    return body


def _flow(layer: Mapping) -> str:
    return "{" + ", ".join(f"{key}: {_scalar(value)}" for key, value in layer.items()) + "}"


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, str) and _PLAIN.match(value) and value.lower() not in _YAML_WORDS:
        return value
    return json.dumps(value)
