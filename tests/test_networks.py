"""Network specs, the standard networks built from them, and their summaries.

Pure JAX; no Django, no database. Shapes are checked with nnx.eval_shape
(nothing allocated); each standard network also takes one real, jitted SGD
step on a few of scikit-learn's digits.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import yaml
from flax import nnx
from PIL import Image
from sklearn.datasets import load_digits

from models.networks import (
    NETWORKS,
    STANDARD_NETWORKS,
    SpecError,
    build_network,
    check_input,
    count_params,
    describe,
    eval_mode,
    parse_spec,
    standard_spec_text,
    train_mode,
)
from models.networks import spec as spec_module
from models.networks.network import SpecNetwork, plan_network
from models.networks.spec import to_yaml

NAMES = [name for name, _ in STANDARD_NETWORKS]
MIN_SIZES = {"lenet": 16, "alexnet": 15, "googlenet": 17, "resnet": 1}


def abstract(network, shape, classes=10):
    return nnx.eval_shape(lambda: build_network(network, shape, classes, rngs=nnx.Rngs(0)))


def state_shapes(model):
    return jax.tree.map(lambda leaf: (leaf.shape, leaf.dtype), nnx.state(model))


def error_of(source, shape=(28, 28, 1), classes=10) -> SpecError:
    with pytest.raises(SpecError) as caught:
        build_network(source, shape, classes, rngs=nnx.Rngs(0))
    return caught.value


# --- the standard networks ----------------------------------------------------------------


def test_standard_networks_are_listed_for_the_form():
    assert STANDARD_NETWORKS == [
        ("lenet", "LeNet"),
        ("alexnet", "AlexNet"),
        ("googlenet", "GoogLeNet"),
        ("resnet", "ResNet-20"),
    ]
    assert list(NETWORKS) == NAMES


@pytest.mark.parametrize(
    ("name", "shape", "classes", "params"),
    [
        ("lenet", (28, 28, 1), 10, 431_080),  # Caffe's LeNet
        ("alexnet", (224, 224, 3), 1000, 60_965_224),  # Caffe's bvlc_alexnet
        ("googlenet", (224, 224, 3), 1000, 6_998_552),  # bvlc_googlenet without its auxiliary heads
        ("resnet", (32, 32, 3), 10, 272_474),  # the paper's 0.27M, with projection shortcuts
    ],
)
def test_parameter_counts_match_the_originals(name, shape, classes, params):
    model = abstract(name, shape, classes)
    assert count_params(model) == params
    assert describe(name, shape, classes).total_params == params
    # Runs on any batch size: shapes traced, nothing computed.
    graphdef, state = nnx.split(model)
    images = jax.ShapeDtypeStruct((5, *shape), jnp.float32)
    logits = jax.eval_shape(lambda state, x: nnx.merge(graphdef, state)(x), state, images)
    assert logits.shape == (5, classes)


@pytest.mark.parametrize("name", NAMES)
def test_minimum_image_size(name):
    side = MIN_SIZES[name]
    assert NETWORKS[name].min_size == side
    assert check_input(name, (side, side, 3), 10) is None
    assert check_input(name, (side + 1, side, 1), 10) is None
    if side > 1:
        title = NETWORKS[name].title
        message = f"{title} needs images of at least {side}x{side} pixels; this dataset's images are {side - 1}x{side}."
        assert check_input(name, (side - 1, side, 3), 10) == message
        summary = describe(name, (side - 1, side, 3), 10)
        # Pinned to the layer that runs out of pixels, whose row ends the list.
        assert summary.error[1] == message
        assert summary.error[0] == summary.rows[-1].path and summary.rows[-1].output_shape is None


SHAPES = [(28, 28, 1), (32, 32, 3), (224, 224, 3), (300, 200, 3)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", ["smallest", *SHAPES], ids=str)
def test_describe_agrees_with_the_rules_and_the_model(name, shape):
    if shape == "smallest":
        shape = (MIN_SIZES[name], MIN_SIZES[name], 3)
    summary = describe(name, shape, 7)
    assert summary.ok, summary.error
    assert summary.output_shape == (7,)
    assert summary.title == NETWORKS[name].title
    # describe's rows are what nnx.eval_shape measured on the real modules;
    # the plan is the pure-Python shape rules that pin errors. They agree.
    planned = NETWORKS[name].plan(shape, 7).rows
    assert [(r.path, r.output_shape, r.params) for r in summary.rows] == [
        (r.path, r.output_shape, r.params) for r in planned
    ]
    # Each row's output shape and parameters were measured on its module;
    # the totals add up the leaf layers (a branches or residual row repeats
    # the sum of the rows inside it).
    assert summary.total_params == sum(row.params for row in summary.rows if not _has_rows_inside(row, summary))
    assert summary.total_flops == sum(row.flops for row in summary.rows if row.depth == 0) > 0


def _has_rows_inside(row, summary) -> bool:
    return any(other.path.startswith(row.path + ".") for other in summary.rows)


def test_describe_hands_out_copies_of_what_it_remembers():
    first = describe("lenet", (28, 28, 1), 10)
    first.rows[0].params = -1
    second = describe("lenet", (28, 28, 1), 10)
    assert second.rows[0].params == 520 and second == describe("lenet", (28, 28, 1), 10)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(28, 28, 1), (224, 224, 3)], ids=str)
def test_spec_text_builds_the_same_network(name, shape):
    text = standard_spec_text(name, shape)
    assert text.startswith("# ")  # commented, for the editor
    # Plain YAML: nothing in it depends on this package's loader.
    assert parse_spec(yaml.safe_load(text)) == parse_spec(text)
    from_text, by_name = abstract(text, shape), abstract(name, shape)
    assert state_shapes(from_text) == state_shapes(by_name)
    assert count_params(from_text) == count_params(by_name)


def test_spec_text_defaults_to_the_native_size():
    assert standard_spec_text("alexnet") == standard_spec_text("alexnet", (224, 224, 3))
    assert "stride: 4" in standard_spec_text("alexnet") and "stride: 4" not in standard_spec_text("alexnet", (32, 32))
    assert standard_spec_text("lenet") == standard_spec_text("lenet", (500, 500))
    with pytest.raises(ValueError, match='Unknown network "vgg"'):
        standard_spec_text("vgg")


def test_models_hold_batch_stats_but_no_rng_state():
    model = abstract("resnet", (32, 32, 3))
    stats = nnx.state(model, nnx.BatchStat)
    # mean and var of every batch_norm: 1 after the stem, 2 per block, 2 per projection.
    assert len(jax.tree.leaves(stats)) == 2 * (1 + 2 * 9 + 2)
    assert count_params(model) == sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
    for name in NAMES:
        leaves = jax.tree.leaves(nnx.state(abstract(name, (32, 32, 3))))
        # Plain float arrays only, so snapshots save as .npz.
        assert all(leaf.dtype == jnp.float32 for leaf in leaves), name


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    images = (data.images[:8] * (255 / 16)).astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(im).resize((28, 28), Image.BILINEAR)) for im in images])
    return images[..., None].astype(np.float32) / 255, data.target[:8].astype(np.int32)


@pytest.mark.parametrize("name", NAMES)
def test_one_training_step(name, digits):
    """The recipe models/networks/__init__.py gives the engine, run for real."""
    x, y = digits
    model = build_network(name, (28, 28, 1), 10, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.01, momentum=0.9), wrt=nnx.Param)
    train_def, state = nnx.split((train_mode(model), optimizer))
    eval_def = nnx.graphdef((eval_mode(model), optimizer))

    @jax.jit
    def train_step(state, x, y, key):
        model, optimizer = nnx.merge(train_def, state)

        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x, rngs=key), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    @jax.jit
    def predict(state, x):
        model, _ = nnx.merge(eval_def, state)
        return model(x)

    state, loss = train_step(state, x, y, jax.random.key(1))
    assert np.isfinite(float(loss))
    logits = predict(state, x)
    assert logits.shape == (8, 10) and np.all(np.isfinite(logits))
    np.testing.assert_array_equal(predict(state, x), logits)  # eval mode is deterministic

    trained, _ = nnx.merge(train_def, state)
    changed = {}
    for kind in (nnx.Param, nnx.BatchStat):
        pairs = zip(jax.tree.leaves(nnx.state(model, kind)), jax.tree.leaves(nnx.state(trained, kind)), strict=True)
        changed[kind] = [not np.array_equal(before, after) for before, after in pairs]
    assert any(changed[nnx.Param])
    # Only ResNet has batch norm; the step carried its new statistics out.
    assert (len(changed[nnx.BatchStat]) > 0 and all(changed[nnx.BatchStat])) == (name == "resnet")


def test_weights_start_as_caffe_xavier_and_follow_the_seed():
    def kernels(seed):
        model = build_network("lenet", (28, 28, 1), 10, rngs=nnx.Rngs(seed))
        return [np.asarray(layer.kernel) for layer in model.layers if hasattr(layer, "kernel")]

    first = kernels(0)
    for kernel in first:
        fan_in = np.prod(kernel.shape[:-1])
        assert np.abs(kernel).max() <= np.sqrt(3 / fan_in)
        assert np.var(kernel) == pytest.approx(1 / fan_in, rel=0.1)
    for again, kernel in zip(kernels(0), first, strict=True):
        np.testing.assert_array_equal(again, kernel)
    assert not np.array_equal(kernels(1)[0], first[0])
    assert all(
        np.all(np.asarray(layer.bias) == 0)
        for layer in NETWORKS["lenet"]((16, 16, 1), 10, rngs=nnx.Rngs(0)).layers
        if hasattr(layer, "bias")
    )


# --- the modes -------------------------------------------------------------------------------------

DROPOUT_NET = {"layers": [{"type": "flatten"}, {"type": "dropout", "rate": 0.5}, {"type": "dropout", "rate": 0.5}]}


def test_dropout_runs_only_in_train_mode_with_a_key():
    model = SpecNetwork(DROPOUT_NET, (4, 4, 1), 16, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 4, 4, 1))
    np.testing.assert_array_equal(model(x), x.reshape(2, 16))  # built in eval mode
    train = train_mode(model)
    first, second = train(x, rngs=jax.random.key(0)), train(x, rngs=jax.random.key(1))
    assert not np.array_equal(first, second)
    # Two dropout layers in a row: kept values are scaled by 2 twice.
    assert set(np.unique(first).tolist()) <= {0.0, 4.0}
    np.testing.assert_array_equal(train(x, rngs=nnx.Rngs(dropout=0)), train(x, rngs=nnx.Rngs(dropout=0)))
    with pytest.raises(ValueError, match="pass rngs="):
        train(x)
    np.testing.assert_array_equal(eval_mode(train)(x), x.reshape(2, 16))


# --- the spec format ----------------------------------------------------------------------------------


def test_the_documented_example_builds():
    doc = spec_module.__doc__
    example = doc[doc.index("::\n") + 3 : doc.index("\nLayer types")]
    summary = describe(example, (32, 32, 3), 10)
    assert summary.ok, summary.error
    assert [row.type for row in summary.rows if row.depth == 0] == [
        "conv",
        "max_pool",
        "branches",
        "residual",
        "global_avg_pool",
        "dropout",
        "dense",
    ]
    top = {row.path: row for row in summary.rows if row.depth == 0}
    assert top["layers[2]"].output_shape == (16, 16, 48)
    assert top["layers[3]"].output_shape == (8, 8, 64)
    assert "layers[3].shortcut[1]" in [row.path for row in summary.rows]


def test_yaml_json_and_mappings_give_the_same_spec():
    layers = [
        {"type": "conv", "features": 8, "kernel": [3, 5], "padding": 1, "activation": "relu"},
        {"type": "local_response_norm", "alpha": 0.0001},
        {"type": "max_pool", "window": 2},
        {"type": "flatten"},
        {"type": "dense"},
    ]
    yaml_text = """
    layers:   # indented YAML is fine
      - {type: conv, features: 8, kernel: [3, 5], padding: 1, activation: relu}
      - {type: local_response_norm, alpha: 1e-4}   # a number, as in JSON, not the string "1e-4"
      - type: max_pool
        window: 2
      - {type: flatten}
      - {type: dense}
    """
    spec = parse_spec({"layers": layers})
    assert parse_spec(yaml_text) == spec == parse_spec(json.dumps({"layers": layers}, indent=2))
    conv, lrn, pool = spec.layers[:3]
    assert conv.params["kernel"] == (3, 5) and conv.params["padding"] == ((1, 1), (1, 1))
    assert lrn.params["alpha"] == 0.0001 and pool.params["stride"] == (2, 2)
    assert spec.last_dense == "layers[4]"


def test_to_yaml_round_trips():
    layers = [
        "a comment line",
        {"type": "conv", "name": "needs: quoting", "features": "classes", "kernel": 1, "use_bias": False},
        {"type": "conv", "name": "yes", "features": 4, "kernel": [1, 3], "padding": "VALID"},
        {
            "type": "branches",
            "name": "mixed",
            "branches": [[], ["in a branch", {"type": "relu"}], [{"type": "avg_pool", "window": 1}, {"type": "tanh"}]],
        },
        {"type": "residual", "layers": [{"type": "batch_norm", "momentum": 0.5}], "shortcut": []},
        {"type": "residual", "layers": [{"type": "sigmoid"}], "shortcut": [{"type": "dropout", "rate": 0.25}]},
        {"type": "global_avg_pool"},
        {"type": "dense"},
    ]
    text = to_yaml(layers, name="Round trip", header="Line one\n\nLine three")
    assert text.startswith("# Line one\n#\n# Line three\nname: Round trip\nlayers:\n  # a comment line\n")
    without_comments = [layer for layer in layers if not isinstance(layer, str)]
    without_comments[2]["branches"][1] = [{"type": "relu"}]
    assert parse_spec(text) == parse_spec({"name": "Round trip", "layers": without_comments})
    assert describe(text, (8, 8, 3), 4).ok


# (source, layer path or None, fragments of the message)
BAD_SPECS = [
    ("layers:\n  - {type: conv, features: 8\n  - {type: dense}\n", None, ["Not valid YAML (line 3, column 5)"]),
    (
        '{"layers": [{"type": "flatten"},, {"type": "dense"}]}',
        None,
        ["Not valid JSON (line 1, column 33): Expecting value."],
    ),
    ("layers:\n  - {type: flatten}\n  - {type: dense, features: 3,\n     features: 4}\n", None, ["line 4", "twice"]),
    ("", None, ["The spec is empty"]),
    ("- " * 5000 + "x", None, ["The spec is nested too deeply to read."]),  # libyaml would crash on it
    ("- {type: flatten}\n", None, ["must be a mapping with a layers list", "got a list"]),
    ({"layer": []}, None, ['Unknown top-level key "layer" (did you mean "layers"?)']),
    ({"layers": []}, "layers", ["layers is empty"]),
    ({"layers": [{"type": "relu"}] * 2001}, "layers[2000]", ["more than 2000 layers"]),
    (
        "layers:\n  - {type: flatten}\n  - {type: convolution, features: 8}\n",
        "layers[1]",
        ['Unknown layer type "convolution" (did you mean "conv"?)', "Known types: adaptive_avg_pool, avg_pool,"],
    ),
    (
        {"layers": [{"type": "conv", "filters": 8, "kernel": 3}]},
        "layers[0]",
        ['conv has no parameter "filters" (did you mean "features"?)', "Allowed: activation, features, groups,"],
    ),
    ({"layers": [{"type": "conv", "features": 8}]}, "layers[0]", ['conv needs a "kernel" parameter']),
    ({"layers": [{"kernel": 3}]}, "layers[0]", ["This layer has no type"]),
    ({"layers": ["conv"]}, "layers[0]", ["Each layer must be a mapping", 'got "conv"']),
    (
        {"layers": [{"type": "dropout", "rate": 1.5}]},
        "layers[0]",
        ["rate must be a number from 0 up to (not including) 1; got 1.5"],
    ),
    (
        {"layers": [{"type": "conv", "features": 8, "kernel": 3, "padding": "FULL"}]},
        "layers[0]",
        [
            "padding must be SAME, VALID, or the pixels added on each side (a number or a [height, width] pair); "
            'got "FULL"'
        ],
    ),
    ({"layers": [{"type": "softmax"}]}, "layers[0]", ["Leave softmax out"]),
    (
        {
            "layers": [
                {"type": "conv", "features": 8, "kernel": 3, "padding": "VALID"},
                {"type": "dense", "features": 10},
            ]
        },
        "layers[1]",
        ["dense needs a flat input, but gets 26x26x8", "add a flatten or global_avg_pool layer before it"],
    ),
    (
        {
            "layers": [
                {"type": "conv", "features": 4, "kernel": 5, "padding": "VALID"},
                {"type": "max_pool", "window": 2},
                {"type": "max_pool", "window": 4},
                {"type": "max_pool", "window": 4},
                {"type": "flatten"},
                {"type": "dense"},
            ]
        },
        "layers[3]",
        ["max_pool window 4x4 is larger than its 3x3 input.", "needs images of at least 36x36 pixels; these are 28x28"],
    ),
    (
        {"layers": [{"type": "conv", "features": 4, "kernel": 31, "padding": "VALID"}, {"type": "flatten"}]},
        "layers[0]",
        ["conv kernel 31x31 is larger than its 28x28 input."],
    ),
    (
        {"layers": [{"type": "flatten"}, {"type": "dense", "features": 64}, {"type": "dense", "features": 5}]},
        "layers[2]",
        ["The last dense layer has 5 outputs but the dataset has 10 classes; set features: classes"],
    ),
    (
        {"layers": [{"type": "flatten"}, {"type": "dense", "name": "hidden"}, {"type": "dense"}]},
        "layers[1]",
        ['dense needs a "features" parameter; only the last dense layer may leave it out'],
    ),
    (
        {"layers": [{"type": "conv", "features": 10, "kernel": 3}]},
        "layers[0]",
        ["must end with one score per class (a vector of 10), but it ends with 28x28x10"],
    ),
    (
        {"layers": [{"type": "conv", "features": 16, "kernel": 3}, {"type": "global_avg_pool"}]},
        "layers[1]",
        ["The network ends with 16 values per image but the dataset has 10 classes"],
    ),
    (
        {
            "layers": [
                {"type": "conv", "features": 16, "kernel": 3},
                {"type": "residual", "layers": [{"type": "conv", "features": 32, "kernel": 3, "stride": 2}]},
            ]
        },
        "layers[1]",
        [
            "residual adds its layers' output to its input (there is no shortcut), so the shapes must match, "
            "but they are 14x14x32 and 28x28x16.",
            "shortcut: [{type: conv, features: 32, kernel: 1, stride: 2}]",
        ],
    ),
    (
        {
            "layers": [
                {
                    "type": "residual",
                    "layers": [{"type": "relu"}],
                    "shortcut": [{"type": "relu"}, {"type": "dense", "features": 3}],
                }
            ]
        },
        "layers[0].shortcut[1]",
        ["dense needs a flat input, but gets 28x28x1"],
    ),
    (
        {
            "layers": [
                {
                    "type": "branches",
                    "name": "mixed",
                    "branches": [
                        [{"type": "conv", "features": 4, "kernel": 3}],
                        [{"type": "conv", "features": 4, "kernel": 3}, {"type": "max_pool", "window": 2}],
                    ],
                }
            ]
        },
        "layers[0]",
        ["branches are concatenated on the channel axis", "they give 28x28x4 (branches[0]), 14x14x4 (branches[1])"],
    ),
    (
        {
            "layers": [
                {
                    "type": "branches",
                    "branches": [[], [{"type": "flatten"}, {"type": "conv", "features": 1, "kernel": 1}]],
                }
            ]
        },
        "layers[0].branches[1][1]",
        ["conv needs an image-shaped input (height x width x channels), but gets a vector of 784"],
    ),
    (
        {
            "layers": [
                {"type": "flatten"},
                {"type": "dense", "features": 100_000},
                {"type": "dense", "features": 100_000},
            ]
        },
        "layers[2]",
        ["the network has 10,078,600,000 parameters; the limit is 1,000,000,000"],
    ),
    (
        {
            "layers": [
                {"type": "conv", "features": 200_000, "kernel": 1},
                {"type": "global_avg_pool"},
                {"type": "dense"},
            ]
        },
        "layers[0]",
        ["This layer outputs 28x28x200000 = 156,800,000 values per image; the limit is 134,217,728."],
    ),
    ({"layers": [{"type": "adaptive_avg_pool", "size": 1000}]}, "layers[0]", ["size must be at most 256"]),
]


@pytest.mark.parametrize(("source", "path", "fragments"), BAD_SPECS)
def test_bad_specs_are_explained_and_pinned(source, path, fragments):
    error = error_of(source)
    assert isinstance(error, ValueError)
    assert error.layer == path
    for fragment in fragments:
        assert fragment in error.message
    where = path if error.name is None else f"{path} ({error.name})"
    assert str(error) == (error.message if path is None else f"{where}: {error.message}")
    assert check_input(source, (28, 28, 1), 10) == str(error)
    summary = describe(source, (28, 28, 1), 10)
    assert summary.error == (path, error.message)
    if path is not None and path.startswith("layers["):
        # The diagram keeps the layers before the failure. A layer that cannot
        # work ends the rows, shapeless; one that works but leaves the wrong
        # output (a class count mismatch) keeps its shape, as do the rest.
        # Either way the error has a row to be pinned to: its own, or, for a
        # spec that does not parse, the top-level layer it sits in.
        paths = [row.path for row in summary.rows]
        assert path in paths or path.startswith(paths[-1] + ".")
        shapeless = [row.path for row in summary.rows if row.output_shape is None]
        assert all(path == p or path.startswith(p + ".") for p in shapeless)


def test_error_names_the_layer():
    spec = {"layers": [{"type": "conv", "features": 8, "kernel": 3}, {"type": "dense", "name": "fc1", "features": 4}]}
    error = error_of(spec)
    assert (error.layer, error.name) == ("layers[1]", "fc1")
    assert str(error).startswith("layers[1] (fc1): dense needs a flat input")


def test_a_typo_keeps_the_rows_before_it():
    text = "layers:\n  - {type: conv, features: 8, kernel: 3}\n  - {type: max_pool, window: 2}\n  - {type: lrn}\n"
    summary = describe(text, (28, 28, 1), 10)
    assert summary.error[0] == "layers[2]" and '(did you mean "local_response_norm"?)' in summary.error[1]
    assert [(row.type, row.output_shape) for row in summary.rows] == [
        ("conv", (28, 28, 8)),
        ("max_pool", (14, 14, 8)),
        ("lrn", None),
    ]


def test_names_and_datasets_are_checked():
    with pytest.raises(ValueError, match='Unknown network "lenet5". Available networks: alexnet, googlenet, lenet'):
        build_network("lenet5", (28, 28, 1), 10, rngs=nnx.Rngs(0))
    assert describe("lenet5", (28, 28, 1), 10).error[0] is None
    assert check_input("lenet", (28, 28, 1), 1) == "A classifier needs at least 2 classes; this dataset has 1."
    assert "at least 1" in check_input("lenet", (28, 0, 1), 10)
    # numpy integers, as a dataset's shape may hold, are fine.
    assert check_input("lenet", tuple(np.array([28, 28, 1])), np.int64(10)) is None


# --- layer numerics -----------------------------------------------------------------------------------


def test_adaptive_avg_pool_matches_torchvision_windows():
    model = SpecNetwork(
        {"layers": [{"type": "adaptive_avg_pool", "size": [2, 3]}, {"type": "flatten"}]}, (5, 3, 1), 6, rngs=nnx.Rngs(0)
    )
    x = np.arange(15, dtype=np.float32).reshape(1, 5, 3, 1)
    # Rows 0..2 and 2..4 (overlapping at 2); columns one each.
    expected = np.stack([x[0, 0:3, :, 0].mean(axis=0), x[0, 2:5, :, 0].mean(axis=0)]).reshape(1, 6)
    np.testing.assert_allclose(model(x), expected, rtol=1e-6)


def test_local_response_norm_matches_caffe():
    layer = {"type": "local_response_norm", "size": 3, "alpha": 0.5, "beta": 0.75, "k": 2.0}
    model = SpecNetwork({"layers": [layer, {"type": "flatten"}]}, (1, 1, 4), 4, rngs=nnx.Rngs(0))
    x = np.array([1.0, 2.0, 3.0, 4.0], np.float32).reshape(1, 1, 1, 4)
    a = x.ravel()
    squares = np.array([a[0] ** 2 + a[1] ** 2, a[:3] @ a[:3], a[1:] @ a[1:], a[2] ** 2 + a[3] ** 2])
    np.testing.assert_allclose(model(x).ravel(), a / (2.0 + 0.5 / 3 * squares) ** 0.75, rtol=1e-6)


def test_plan_needs_no_jax_and_is_fast_enough_to_scan_sizes():
    spec = NETWORKS["googlenet"].spec((224, 224))
    plan = plan_network(spec, (224, 224, 3), 1000)
    assert plan.error is None and plan.output_shape == (1000,)
    assert [row.output_shape for row in plan.rows if row.name == "inception_5b"] == [(7, 7, 1024)]
