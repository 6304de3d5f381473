"""Training engine tests on scikit-learn's digits, upscaled to MNIST size.

Pure JAX; no Django, no database.
"""

import json
import math

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image
from sklearn.datasets import load_digits

from models.networks import build_network, count_params
from training import engine


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


def test_resume_from_snapshot(run, data):
    _, epochs, snapshots = run
    resumed = engine.fit(data, engine.TrainConfig(epochs=2), start_epoch=1, initial_state=snapshots[1])
    assert [m["epoch"] for m in resumed.history] == [2]
    # Same weights and shuffle, only the momentum restarts: close, not equal.
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
        ("solver", "rmsprop", "Unknown solver"),
        ("network", "alexnet", "Unknown network"),
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
