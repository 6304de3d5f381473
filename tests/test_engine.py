"""Training engine tests on scikit-learn's digits, upscaled to MNIST size.

Pure JAX; no Django, no database.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from PIL import Image
from sklearn.datasets import load_digits

from models.networks import build_network, count_params
from training import engine, schedules

ROOT = Path(__file__).resolve().parent.parent


def _digits(size: int) -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    images = (digits.images * (255 / 16)).astype(np.uint8)
    if size != 8:
        images = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])
    return images[..., None], digits.target.astype(np.int32)


@pytest.fixture(scope="module")
def data() -> engine.ArrayData:
    x, y = _digits(28)
    train_x, train_y, val_x, val_y = x[:1000], y[:1000], x[1000:1300], y[1000:1300]
    return engine.ArrayData(train_x, train_y, val_x, val_y, train_x.mean(axis=0, dtype=np.float32), 10)


@pytest.fixture(scope="module")
def small(data) -> engine.ArrayData:
    return engine.ArrayData(data.train_x[:256], data.train_y[:256], data.val_x[:100], data.val_y[:100], data.mean, 10)


@pytest.fixture(scope="module")
def run(data):
    """One 2-epoch training run that most tests inspect."""
    epochs, snapshots = [], {}
    result = engine.fit(
        data,
        engine.TrainConfig(epochs=2),
        on_epoch=epochs.append,
        on_snapshot=lambda epoch, state: snapshots.__setitem__(epoch, state),
    )
    return result, epochs, snapshots


def test_two_epochs_learn_digits(run):
    result, epochs, _ = run
    assert not result.stopped
    assert result.epochs_completed == 2
    assert result.history == epochs
    # Reaches about 0.9 after two epochs; chance is 0.1.
    assert epochs[-1]["val_accuracy"] > 0.75
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]


def test_on_epoch_metrics_are_plain_python(run):
    _, epochs, _ = run
    assert [m["epoch"] for m in epochs] == [1, 2]
    for metrics in epochs:
        assert set(metrics) == {
            "epoch",
            "train_loss",
            "val_loss",
            "val_accuracy",
            "learning_rate",
            "images_per_second",
            "seconds",
        }
        assert type(metrics["epoch"]) is int
        for key in metrics.keys() - {"epoch"}:
            assert type(metrics[key]) is float and math.isfinite(metrics[key]), key
        assert metrics["learning_rate"] == 0.01
        json.dumps(metrics, allow_nan=False)


def test_snapshot_round_trip_gives_identical_predictions(run, data):
    result, epochs, snapshots = run
    assert sorted(snapshots) == [1, 2]
    loaded = engine.load_model(snapshots[2], "lenet", data.input_shape, 10)
    for saved, restored in zip(
        jax.tree.leaves(nnx.state(result.model)), jax.tree.leaves(nnx.state(loaded)), strict=True
    ):
        np.testing.assert_array_equal(restored, saved)
    expected = engine.predict(result.model, data.val_x, data.mean)
    np.testing.assert_array_equal(engine.predict(loaded, data.val_x, data.mean), expected)
    np.testing.assert_allclose(expected.sum(axis=1), 1, rtol=1e-5)
    # Inference agrees with the validation pass that fit reported (up to a
    # near-tie flipping under a different batch shape on other hardware).
    accuracy = np.mean(expected.argmax(axis=1) == data.val_y)
    assert accuracy == pytest.approx(epochs[-1]["val_accuracy"], abs=0.01)


def test_predict_does_not_depend_on_batching(run, data):
    model = run[0].model
    together = engine.predict(model, data.val_x[:5], data.mean)
    alone = np.concatenate([engine.predict(model, data.val_x[i : i + 1], data.mean) for i in range(5)])
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-6)


def test_load_model_rejects_other_shapes(run):
    with pytest.raises(ValueError, match="number of classes"):
        engine.load_model(run[2][2], "lenet", (28, 28, 1), 5)


def test_weights_only_resume_still_works(run, data):
    _, epochs, snapshots = run
    resumed = engine.fit(data, engine.TrainConfig(epochs=2), start_epoch=1, initial_state=snapshots[1])
    assert [m["epoch"] for m in resumed.history] == [2]
    # The older way: same weights and shuffle, only the momentum restarts: close, not equal.
    assert resumed.history[0]["val_accuracy"] == pytest.approx(epochs[1]["val_accuracy"], abs=0.1)


def test_should_stop_ends_the_run_early(data):
    reported = []
    result = engine.fit(
        data,
        engine.TrainConfig(epochs=5),
        on_epoch=reported.append,
        should_stop=lambda: len(reported) >= 1,
    )
    assert result.stopped
    assert result.epochs_completed == 1
    assert [m["epoch"] for m in reported] == [1]
    assert isinstance(result.model, nnx.Module)


@pytest.mark.parametrize("learning_rate", [float("nan"), float("inf"), 0, -0.1, "0.01", True])
def test_bad_learning_rate_is_rejected(data, learning_rate):
    config = engine.TrainConfig(learning_rate=learning_rate)
    with pytest.raises(ValueError, match="Learning rate must be a finite number greater than 0"):
        config.validate()
    with pytest.raises(ValueError, match="Learning rate"):
        engine.fit(data, config)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("batch_size", 0, "Batch size"),
        ("epochs", 0, "epochs"),
        ("solver", "rmsprop2", "Unknown solver"),
        ("network", "no-such-net", "Unknown network"),
        ("momentum", 1.0, "Momentum"),
        ("rms_decay", -0.1, "RMS decay"),
        ("weight_decay", -1e-4, "Weight decay"),
        ("delta", 0, "Delta"),
        ("batch_accumulation", 0, "Batch accumulation"),
        ("shuffle", "yes", "Shuffle"),
        ("val_interval", -1, "Validation interval"),
        ("snapshot_interval", float("inf"), "Snapshot interval"),
        ("early_stopping", "loss", "Early stopping"),
        ("patience", 0, "Patience"),
        ("lr_policy", engine.LRPolicy("onecycle"), "learning rate policy"),
        ("augmentation", engine.Augmentation(flip="sideways"), "Flipping"),
    ],
)
def test_bad_config_is_rejected(field, value, message):
    with pytest.raises(ValueError, match=message):
        engine.TrainConfig(**{field: value}).validate()


def test_diverging_loss_raises_training_error(small):
    with pytest.raises(engine.TrainingError, match="loss became NaN at epoch 1"):
        engine.fit(small, engine.TrainConfig(epochs=2, learning_rate=1e6))


def test_images_too_small_for_lenet():
    x, y = _digits(8)
    data = engine.ArrayData(x[:100], y[:100], x[:0], y[:0], None, 10)
    with pytest.raises(ValueError, match="at least 16x16"):
        engine.fit(data, engine.TrainConfig(epochs=1))
    # 16x16 is the real limit, not just the message.
    model = build_network("lenet", (16, 16, 1), 10, rngs=nnx.Rngs(0))
    assert count_params(model) > 0
    with pytest.raises(ValueError, match="at least 16x16"):
        build_network("lenet", (15, 16, 1), 10, rngs=nnx.Rngs(0))


def test_lenet_matches_caffe_parameter_count():
    model = build_network("lenet", (28, 28, 1), 10, rngs=nnx.Rngs(0))
    assert count_params(model) == 431_080


def test_host_streaming_matches_device_resident(small, monkeypatch):
    config = engine.TrainConfig(epochs=1)
    on_device = engine.fit(small, config).history[0]
    monkeypatch.setattr(engine, "_device_budget", lambda: 0)
    streamed = engine.fit(small, config).history[0]
    for key in ("train_loss", "val_loss", "val_accuracy"):
        assert streamed[key] == pytest.approx(on_device[key], rel=1e-5), key


def test_adam_without_validation_or_mean(small):
    data = engine.ArrayData(small.train_x, small.train_y, small.val_x[:0], small.val_y[:0], None, 10)
    result = engine.fit(data, engine.TrainConfig(epochs=1, solver="adam", learning_rate=1e-3, batch_size=500))
    # 256 images with a batch of 500 train as one full batch.
    (metrics,) = result.history
    assert metrics["val_loss"] is None and metrics["val_accuracy"] is None
    assert math.isfinite(metrics["train_loss"])


# --- solvers, schedules and intervals through fit ---------------------------------


def _variables(model: nnx.Module) -> dict[str, np.ndarray]:
    """Weights and BatchNorm statistics by path (RNG keys are not arrays to compare)."""
    state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    return {"/".join(map(str, path)): np.asarray(var.get_value()) for path, var in nnx.to_flat_state(state)}


def _assert_same_model(a: nnx.Module, b: nnx.Module, **tolerance) -> None:
    va, vb = _variables(a), _variables(b)
    assert va.keys() == vb.keys()
    for key in va:
        np.testing.assert_allclose(va[key], vb[key], err_msg=key, **tolerance)


def test_learning_rate_metric_follows_the_policy(small):
    # 256 images, batch 64: 4 updates an epoch, 12 in all; poly power 1 falls linearly to 0.
    config = engine.TrainConfig(
        epochs=3, solver="rmsprop", learning_rate=1e-3, lr_policy=engine.LRPolicy("poly", poly_power=1)
    )
    history = engine.fit(small, config).history
    rates = [m["learning_rate"] for m in history]
    np.testing.assert_allclose(rates, [1e-3 * 9 / 12, 1e-3 * 5 / 12, 1e-3 * 1 / 12], rtol=1e-9)
    # The form's preview shows the same numbers.
    curve = dict(engine.learning_rate_curve(config, schedules.steps_per_epoch(256, 64), points=4))
    assert curve[1.0] == pytest.approx(1e-3 * 8 / 12)  # the update starting epoch 2 (iteration 4)


def test_batch_accumulation_equals_a_bigger_batch(small):
    big = engine.fit(small, engine.TrainConfig(epochs=1, batch_size=64))
    accumulated = engine.fit(small, engine.TrainConfig(epochs=1, batch_size=32, batch_accumulation=2))
    _assert_same_model(accumulated.model, big.model, rtol=1e-4, atol=1e-6)
    for key in ("train_loss", "val_loss", "learning_rate"):
        assert accumulated.history[0][key] == pytest.approx(big.history[0][key], rel=1e-4), key


def test_fractional_intervals_validate_and_snapshot_within_the_epoch(small):
    validations, snapshots, epochs, progress = [], {}, [], []
    config = engine.TrainConfig(epochs=2, batch_size=32, val_interval=0.5, snapshot_interval=0.5)
    engine.fit(
        small,
        config,
        on_epoch=epochs.append,
        on_validation=lambda *args: validations.append(args),
        on_snapshot=snapshots.__setitem__,
        on_progress=lambda *args: progress.append(args),
    )
    assert [v[0] for v in validations] == [0.5, 1, 1.5, 2]
    assert [type(v[0]) for v in validations] == [float, int, float, int]
    assert list(snapshots) == [0.5, 1, 1.5, 2]
    # Each epoch reports the validation at its end.
    assert [(m["val_loss"], m["val_accuracy"]) for m in epochs] == [v[1:3] for v in validations[1::2]]
    # Mid-epoch ones say how fast the part of the epoch before them trained, and how long it took.
    for _, _, _, rate, seconds in validations:
        assert rate > 0 and seconds > 0
    epoch, step, steps, images_per_second = progress[0]
    assert (epoch, step, steps) == (1, 1, 8) and images_per_second > 0


def test_the_curve_at_iteration_resolution_comes_in_windows_of_k_steps(small):
    # 256 images in batches of 4: 64 steps an epoch, so a point every max(1, 64 // 50) = 1 step;
    # in batches of 2, 128 steps: a point every 2, each the mean of its 2 batches.
    for batch_size, every in ((4, 1), (2, 2)):
        calls = []
        # Batches of 2 at DIGITS' 0.01 diverge on some CPUs; the windows are what this is about.
        config = engine.TrainConfig(epochs=2, batch_size=batch_size, learning_rate=0.002, val_interval=0.5)
        result = engine.fit(small, config, on_steps=lambda *arrays, calls=calls: calls.append(arrays))
        steps, losses, accuracies, times = (np.concatenate(part) for part in zip(*calls, strict=True))
        per_epoch = 256 // batch_size
        assert engine.series.step_interval(per_epoch, 2) == every
        np.testing.assert_array_equal(steps, np.arange(every, 2 * per_epoch + 1, every))
        # The epoch's train loss is the mean of its batches' losses, so of its windows' means.
        for epoch in (0, 1):
            window = slice(epoch * per_epoch // every, (epoch + 1) * per_epoch // every)
            assert losses[window].mean() == pytest.approx(result.history[epoch]["train_loss"], rel=1e-4)
        assert ((accuracies >= 0) & (accuracies <= 1)).all() and len(set(accuracies.tolist())) > 1
        assert (np.diff(times) >= 0).all()
        assert len(calls) >= 4  # handed over before each validation, not once at the end


def test_the_curve_goes_on_where_a_resumed_run_stopped(small, monkeypatch):
    monkeypatch.setattr(engine, "STOP_POLL_SECONDS", 0)  # asked before every step
    calls, snapshots = [], {}
    stopped = {"after": 0}

    def stop():
        stopped["after"] += 1
        return stopped["after"] > 3

    config = engine.TrainConfig(epochs=2, batch_size=8)
    engine.fit(small, config, on_steps=lambda *a: calls.append(a), on_snapshot=snapshots.__setitem__, should_stop=stop)
    (at,) = snapshots
    first = np.concatenate([c[0] for c in calls])
    # The partial window at the stop is handed over too: the curve ends where the snapshot is.
    assert first[-1] == round(at * 32)
    calls.clear()
    engine.fit(small, config, on_steps=lambda *a: calls.append(a), resume_from=snapshots[at])
    second = np.concatenate([c[0] for c in calls])
    assert second[0] > first[-1] and second[-1] == 64


def test_sparse_intervals_still_validate_and_snapshot_at_the_end(small):
    validations, snapshots = [], {}
    config = engine.TrainConfig(epochs=3, val_interval=2, snapshot_interval=0)
    result = engine.fit(
        small, config, on_validation=lambda epoch, *_: validations.append(epoch), on_snapshot=snapshots.__setitem__
    )
    assert validations == [2, 3] and list(snapshots) == [3]
    assert [m["val_loss"] is None for m in result.history] == [True, False, False]


def test_shuffle_off_keeps_the_dataset_order():
    order = engine._epoch_order(engine.TrainConfig(shuffle=False), 3, 10, 2, 4)
    np.testing.assert_array_equal(order, [[0, 1, 2, 3], [4, 5, 6, 7]])
    shuffled = engine._epoch_order(engine.TrainConfig(), 3, 10, 2, 4)
    assert not np.array_equal(shuffled, order)
    np.testing.assert_array_equal(shuffled, engine._epoch_order(engine.TrainConfig(), 3, 10, 2, 4))


def test_early_stopping_after_patience(small):
    snapshots = {}
    # A rate too small to change any prediction: accuracy never improves on the first validation.
    config = engine.TrainConfig(
        epochs=10, learning_rate=1e-9, early_stopping="val_accuracy", patience=2, snapshot_interval=0
    )
    result = engine.fit(small, config, on_snapshot=snapshots.__setitem__)
    assert result.early_stopped and not result.stopped
    assert [m["epoch"] for m in result.history] == [1, 2, 3] and result.epochs_completed == 3
    assert list(snapshots) == [3]  # the run ended there, so it keeps a snapshot


def test_early_stopping_counts_validations_without_improvement():
    watch = engine._EarlyStopping("val_loss", patience=2)
    assert [watch.update(loss, 0.0) for loss in (1.0, 0.9, 0.95, 0.9)] == [False, False, False, True]
    watch = engine._EarlyStopping("val_accuracy", patience=1)
    assert [watch.update(0.0, accuracy) for accuracy in (0.5, 0.6, 0.6)] == [False, False, True]


def test_early_stopping_needs_a_validation_split(small):
    data = engine.ArrayData(small.train_x, small.train_y, small.val_x[:0], small.val_y[:0], None, 10)
    with pytest.raises(ValueError, match="validation split"):
        engine.fit(data, engine.TrainConfig(epochs=1, early_stopping="val_loss"))


# --- resume, abort, pretrained, divergence ---------------------------------------


def test_resume_continues_exactly_where_it_stopped(small):
    config = engine.TrainConfig(
        epochs=2,
        solver="adam",
        learning_rate=1e-3,
        lr_policy=engine.LRPolicy("step", step_size=50),
        augmentation=engine.Augmentation(flip="fliplr", noise=0.05),
    )
    snapshots = {}
    straight = engine.fit(small, config, on_snapshot=snapshots.__setitem__)
    resumed = engine.fit(small, config, resume_from=snapshots[1])
    # Adam's moments, the step count (and so the schedule) and the augmentation RNG all carried over.
    assert [m["epoch"] for m in resumed.history] == [2]
    for key in ("train_loss", "val_loss", "val_accuracy", "learning_rate"):
        assert resumed.history[0][key] == straight.history[1][key], key
    _assert_same_model(resumed.model, straight.model, rtol=0, atol=0)


def test_abort_mid_epoch_keeps_a_snapshot_that_resumes_exactly(small, monkeypatch):
    monkeypatch.setattr(engine, "STOP_POLL_SECONDS", 0)  # ask before every step
    config = engine.TrainConfig(epochs=2, batch_size=32)  # 8 steps an epoch
    polls, reported, snapshots = [], [], {}

    def should_stop():
        polls.append(None)
        return len(polls) == 11  # before the 11th step: 2 steps into epoch 2

    stopped = engine.fit(
        small, config, on_epoch=reported.append, on_snapshot=snapshots.__setitem__, should_stop=should_stop
    )
    assert stopped.stopped and stopped.epochs_completed == 1
    assert list(snapshots) == [1, 1.25]
    checkpoint = engine.read_checkpoint(snapshots[1.25])
    assert (checkpoint.epoch, checkpoint.step, checkpoint.position) == (1, 2, 1.25)

    resumed = engine.fit(small, config, on_epoch=reported.append, resume_from=snapshots[1.25])
    assert [m["epoch"] for m in reported] == [1, 2]  # no epoch counted twice
    straight = engine.fit(small, config)
    _assert_same_model(resumed.model, straight.model, rtol=0, atol=0)
    # Epoch 2's loss averages all 8 of its batches, the 2 before the abort included.
    assert reported[1]["train_loss"] == pytest.approx(straight.history[1]["train_loss"], rel=1e-6)


def test_resume_refuses_a_snapshot_of_another_setup(run, data):
    with pytest.raises(ValueError, match="different batch size"):
        engine.fit(data, engine.TrainConfig(epochs=3, batch_size=32), resume_from=run[2][1])
    with pytest.raises(ValueError, match="another solver"):
        engine.fit(data, engine.TrainConfig(epochs=3, solver="adam"), resume_from=run[2][1])
    with pytest.raises(ValueError, match="weights only"):
        engine.fit(data, engine.TrainConfig(epochs=3), resume_from=engine.serialize_model(run[0].model))


def test_checkpoint_format(run):
    checkpoint = engine.read_checkpoint(run[2][2])
    assert (checkpoint.epoch, checkpoint.step, checkpoint.steps_per_epoch, checkpoint.position) == (2, 0, 15, 2)
    again = engine.read_checkpoint(engine.serialize_checkpoint(checkpoint))
    assert again.model.keys() == checkpoint.model.keys() and again.optimizer.keys() == checkpoint.optimizer.keys()
    for key, value in checkpoint.optimizer.items():
        np.testing.assert_array_equal(again.optimizer[key], value)
    with pytest.raises(ValueError, match="not a snapshot"):
        engine.read_checkpoint(b"not an archive")


def test_pretrained_with_another_class_count_reinitialises_only_the_head(run, small):
    keep = small.train_y < 5
    five = engine.ArrayData(
        small.train_x[keep], small.train_y[keep], small.val_x[small.val_y < 5], small.val_y[small.val_y < 5], None, 5
    )
    pretrained = run[2][2]
    # A rate too small to move anything: the loaded weights are still what was saved.
    result = engine.fit(five, engine.TrainConfig(epochs=1, learning_rate=1e-9), pretrained=pretrained)

    def shapes(classes):
        model = nnx.eval_shape(lambda: build_network("lenet", (28, 28, 1), classes, rngs=nnx.Rngs(0)))
        return {"/".join(map(str, p)): v.get_value().shape for p, v in nnx.to_flat_state(nnx.state(model))}

    head = sorted(k for k, shape in shapes(5).items() if shapes(10)[k] != shape)
    assert len(head) == 2 and sorted(result.reinitialized) == head  # the last layer's kernel and bias
    saved = engine.read_checkpoint(pretrained).model
    for key, value in _variables(result.model).items():
        if key not in head:
            np.testing.assert_allclose(value, saved[key], atol=1e-6, err_msg=key)


def test_pretrained_that_shares_nothing_is_refused(small):
    other = build_network(TINY_SPEC, (28, 28, 1), 10, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="share no layer"):
        engine.fit(small, engine.TrainConfig(epochs=1), pretrained=engine.serialize_model(other))


def test_diverging_loss_keeps_no_nan_snapshot(small):
    snapshots = {}
    config = engine.TrainConfig(epochs=2, learning_rate=1e6, snapshot_interval=0.25)
    with pytest.raises(engine.TrainingError, match=r"became (NaN|infinite) at epoch 1"):
        engine.fit(small, config, on_snapshot=snapshots.__setitem__)
    for state_bytes in snapshots.values():
        for value in engine.read_checkpoint(state_bytes).model.values():
            assert np.isfinite(value).all()


def test_out_of_device_memory_is_a_training_error():
    with pytest.raises(engine.TrainingError, match="ran out of memory"):
        with engine._device_errors():
            raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 4.00GiB")
    with pytest.raises(jax.errors.JaxRuntimeError, match="INTERNAL"):
        with engine._device_errors():
            raise jax.errors.JaxRuntimeError("INTERNAL: something else")


# --- train and eval mode: BatchNorm and dropout ------------------------------------

# The platform's networks take their dropout key with each call.
TINY_SPEC = {
    "layers": [
        {"type": "conv", "features": 8, "kernel": 3, "activation": "relu"},
        {"type": "batch_norm"},
        {"type": "global_avg_pool"},
        {"type": "dropout", "rate": 0.5},
        {"type": "dense"},
    ]
}


class TinyNet(nnx.Module):
    """Conv, BatchNorm, then Dropout that keeps its own RNG stream in the module."""

    def __init__(self, input_shape, num_classes, *, rngs):
        self.conv = nnx.Conv(input_shape[2], 8, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.head = nnx.Linear(8, num_classes, rngs=rngs)

    def __call__(self, x):
        x = self.drop(nnx.relu(self.norm(self.conv(x))))
        return self.head(x.mean(axis=(1, 2)))


@pytest.mark.parametrize("network", ["tiny-module", "spec"])
def test_batch_norm_and_dropout_train_evaluate_and_resume(small, monkeypatch, network):
    if network == "tiny-module":
        monkeypatch.setitem(engine.NETWORKS, network, None)
        monkeypatch.setattr(engine, "build_network", lambda name, *args, **kwargs: TinyNet(*args, **kwargs))
    else:
        network = TINY_SPEC
    config = engine.TrainConfig(network=network, epochs=2, batch_size=32, learning_rate=0.1)
    snapshots = {}
    result = engine.fit(small, config, on_snapshot=snapshots.__setitem__)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]

    stats = nnx.state(result.model, nnx.BatchStat)
    assert any(np.abs(np.asarray(v.get_value())).max() > 0.01 for _, v in nnx.to_flat_state(stats))
    if isinstance(result.model, TinyNet):
        assert int(result.model.drop.rngs.count.get_value()) == 16  # one draw a step, carried step to step

    # Eval mode: running statistics and no dropout, so an image's prediction
    # is the same alone or in a batch, every time, and matches validation.
    together = engine.predict(result.model, small.val_x[:8], small.mean)
    alone = engine.predict(result.model, small.val_x[:1], small.mean)
    np.testing.assert_allclose(alone[0], together[0], rtol=1e-5, atol=1e-6)
    accuracy = np.mean(engine.predict(result.model, small.val_x, small.mean).argmax(axis=1) == small.val_y)
    assert accuracy == pytest.approx(result.history[-1]["val_accuracy"], abs=0.011)

    # Dropout masks, batch statistics and the RNG all resume exactly.
    resumed = engine.fit(small, config, resume_from=snapshots[1])
    _assert_same_model(resumed.model, result.model, rtol=0, atol=0)


# --- data on several devices, augmentation, the compilation cache ------------------

TWO_DEVICES = """
import json, jax, numpy as np
from training import engine
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (160, 16, 16, 1), dtype=np.uint8)
y = (x.reshape(160, -1).mean(axis=1) > 127).astype(np.int32)
data = engine.ArrayData(x[:128], y[:128], x[128:], y[128:], x[:128].mean(axis=0, dtype=np.float32), 2)
config = engine.TrainConfig(epochs=2, batch_size=32, augmentation=engine.Augmentation(flip="fliplr", noise=0.05))
def losses():
    return [(m["train_loss"], m["val_loss"]) for m in engine.fit(data, config).history]
mesh = engine._mesh(32)
many = losses()
budget = engine._device_budget
engine._device_budget = lambda: 0  # and streamed from the host, each batch split across the devices
streamed = losses()
engine._device_budget = budget
engine._data_devices = lambda: jax.devices()[:1]
one = losses()
print(json.dumps({"devices": len(jax.devices()), "mesh": mesh.size, "many": many, "streamed": streamed, "one": one}))
"""


def test_two_devices_give_the_same_losses_as_one():
    # The flag must be set before JAX starts, hence a fresh process.
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", TWO_DEVICES], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["devices"] == 2 and result["mesh"] == 2
    np.testing.assert_allclose(result["many"], result["one"], rtol=1e-4)
    np.testing.assert_allclose(result["streamed"], result["one"], rtol=1e-4)


def test_crop_trains_on_crops_and_predicts_on_the_centre(small):
    aug = engine.Augmentation(crop_size=24, flip="fliplr", rotation=10, use_mean="pixel")
    epochs, snapshots = [], {}
    engine.fit(
        small, engine.TrainConfig(epochs=1, augmentation=aug), on_epoch=epochs.append, on_snapshot=snapshots.__setitem__
    )
    model = engine.load_model(snapshots[1], "lenet", aug.input_shape(small.input_shape), 10)
    # Inference gets the run's deterministic transform: pixel mean, centre crop.
    probabilities = engine.predict(model, small.val_x, small.mean, aug)
    accuracy = np.mean(probabilities.argmax(axis=1) == small.val_y)
    assert accuracy == pytest.approx(epochs[0]["val_accuracy"], abs=0.011)


def test_enable_compilation_cache_keeps_compiled_programs(tmp_path):
    from jax.experimental.compilation_cache import compilation_cache

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    before = {name: getattr(jax.config, name) for name in names}
    try:
        engine.enable_compilation_cache(tmp_path / "jax-cache")
        jax.jit(lambda v: v * 3 + 1)(jnp.arange(7.0)).block_until_ready()
        assert any((tmp_path / "jax-cache").iterdir())
    finally:
        for name, value in before.items():
            jax.config.update(name, value)
        compilation_cache.reset_cache()
