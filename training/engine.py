"""Training core: numpy arrays in, trained Flax NNX model and metrics out.

Pure JAX/Flax/optax; nothing here knows about Django, the database or the job
queue. Importing this module imports JAX but does not initialise a backend
(no device is touched until ``fit``, ``predict`` or ``load_model`` runs), so
the caller decides which process owns the accelerator.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import numbers
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from models.networks import NETWORKS, build_network

SOLVERS = ("sgd", "adam")

# Keep a split in accelerator memory when it takes at most this share of it;
# bigger splits are gathered on the host batch by batch instead.
DEVICE_DATA_FRACTION = 0.25
# Devices that do not report their memory (the CPU backend) get this budget.
DEFAULT_DEVICE_DATA_BYTES = 2 * 1024**3
# should_stop may hit a database, so ask at most this often.
STOP_POLL_SECONDS = 0.2
PREDICT_BATCH = 256


class TrainingError(RuntimeError):
    """Training cannot go on; the message is written for the end user."""


@dataclasses.dataclass
class TrainConfig:
    network: str = "lenet"
    epochs: int = 5
    batch_size: int = 64
    learning_rate: float = 0.01
    solver: str = "sgd"  # "sgd" (with momentum) or "adam"
    momentum: float = 0.9  # SGD only
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError with a user-facing message for the first bad field."""
        if self.network not in NETWORKS:
            known = ", ".join(sorted(NETWORKS))
            raise ValueError(f'Unknown network "{self.network}". Available networks: {known}.')
        if not _is_real(self.learning_rate) or not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise ValueError(f"Learning rate must be a finite number greater than 0; got {self.learning_rate!r}.")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(f"Batch size must be a whole number of at least 1; got {self.batch_size!r}.")
        if not _is_int(self.epochs) or self.epochs < 1:
            raise ValueError(f"Number of epochs must be a whole number of at least 1; got {self.epochs!r}.")
        if self.solver not in SOLVERS:
            raise ValueError(f'Unknown solver "{self.solver}". Available solvers: {", ".join(SOLVERS)}.')
        if not _is_real(self.momentum) or not 0 <= self.momentum < 1:
            raise ValueError(f"Momentum must be a number from 0 up to (not including) 1; got {self.momentum!r}.")
        if not _is_int(self.seed):
            raise ValueError(f"Seed must be a whole number; got {self.seed!r}.")


@dataclasses.dataclass
class ArrayData:
    """A classification dataset already decoded to fixed-size images."""

    train_x: np.ndarray  # (N, H, W, C) uint8; a np.memmap is fine
    train_y: np.ndarray  # (N,) integer labels in [0, num_classes)
    val_x: np.ndarray  # (M, H, W, C) uint8; M may be 0
    val_y: np.ndarray  # (M,)
    mean: np.ndarray | None  # (H, W, C) float32 mean image, or None
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    def validate(self) -> None:
        if self.train_x.ndim != 4:
            raise ValueError(
                f"Training images must be an (N, height, width, channels) array; got {self.train_x.shape}."
            )
        if len(self.train_x) == 0:
            raise ValueError("The training split has no images.")
        for split, x, y in (("training", self.train_x, self.train_y), ("validation", self.val_x, self.val_y)):
            if len(x) != len(y):
                raise ValueError(f"The {split} split has {len(x)} images but {len(y)} labels.")
            if len(x) and x.shape[1:] != self.train_x.shape[1:]:
                raise ValueError(f"Validation images are {x.shape[1:]} but training images are {self.input_shape}.")
            if len(y) and not 0 <= int(np.min(y)) <= int(np.max(y)) < self.num_classes:
                raise ValueError(f"The {split} split has labels outside 0..{self.num_classes - 1}.")
        if self.mean is not None and np.shape(self.mean) != self.input_shape:
            raise ValueError(f"The mean image is {np.shape(self.mean)} but the images are {self.input_shape}.")


@dataclasses.dataclass
class FitResult:
    model: nnx.Module  # weights after the last step taken (mid-epoch if stopped)
    epochs_completed: int  # counts start_epoch, so it is the last epoch number reported
    stopped: bool  # should_stop() asked to stop
    history: list[dict]  # every on_epoch metrics dict, in order


def preprocess(x, mean):
    """uint8 images -> float32 network input: (x - mean) / 255, as DIGITS did.

    Works on numpy and JAX arrays alike; training, validation and inference
    all go through here so they cannot drift apart.
    """
    x = x.astype(np.float32)
    if mean is not None:
        x = x - mean
    return x / 255.0


# --- jitted steps -------------------------------------------------------------
# Plain jax.jit over nnx.split/nnx.merge (Flax performance guide): the graph
# traversal happens once at trace time instead of on every call, which matters
# for small models like LeNet whose GPU steps are short enough for Python
# overhead to show.
# Batches are gathered inside the step (x_src[idx]) so that device-resident
# data never round-trips through the host.


@functools.partial(jax.jit, donate_argnames=("state", "loss_sum"))
def _train_step(graphdef, state, loss_sum, x_src, y_src, idx, mean):
    model, optimizer = nnx.merge(graphdef, state)
    x, y = preprocess(x_src[idx], mean), y_src[idx]

    def loss_fn(model):
        return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    # The running sum stays on the device: reading it every step would stall
    # the asynchronous dispatch queue.
    return nnx.state((model, optimizer)), loss_sum + loss


@functools.partial(jax.jit, donate_argnames="sums")
def _eval_step(graphdef, state, sums, x_src, y_src, idx, valid, mean):
    model, _ = nnx.merge(graphdef, state)
    logits, y = model(preprocess(x_src[idx], mean)), y_src[idx]
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    correct = logits.argmax(axis=-1) == y
    # valid masks out the padding of the final partial batch.
    return sums + jnp.stack([jnp.sum(jnp.where(valid, losses, 0.0)), jnp.sum(correct & valid)])


@jax.jit
def _predict_batch(graphdef, state, x, mean):
    return jax.nn.softmax(nnx.merge(graphdef, state)(preprocess(x, mean)))


# --- training -----------------------------------------------------------------


def fit(
    data: ArrayData,
    config: TrainConfig,
    *,
    on_epoch: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_snapshot: Callable[[int, bytes], None] | None = None,
    start_epoch: int = 0,
    initial_state: bytes | None = None,
) -> FitResult:
    """Train ``config.network`` on ``data`` for epochs start_epoch+1..config.epochs.

    After every epoch, ``on_snapshot(epoch, serialize_model(model))`` and then
    ``on_epoch(metrics)`` are called; ``images_per_second`` counts training
    steps only (the first epoch's includes compilation), ``seconds`` is the
    whole epoch up to on_epoch. ``should_stop()`` is asked before each epoch
    and then at most every STOP_POLL_SECONDS. To resume a run, pass the epoch of the
    last snapshot as ``start_epoch`` and its bytes as ``initial_state``: the
    remaining epochs see the same shuffles as an uninterrupted run, but SGD
    momentum / Adam moments restart from zero.

    Raises ValueError for a bad config or dataset, TrainingError if the loss
    diverges.
    """
    config.validate()
    data.validate()
    if not _is_int(start_epoch) or not 0 <= start_epoch <= config.epochs:
        raise ValueError(f"start_epoch must be between 0 and {config.epochs}; got {start_epoch!r}.")

    model = build_network(config.network, data.input_shape, data.num_classes, rngs=nnx.Rngs(config.seed))
    if initial_state is not None:
        _restore(model, initial_state)
    optimizer = nnx.Optimizer(model, _make_tx(config.solver, config.learning_rate, config.momentum), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))

    n_train = len(data.train_x)
    # A dataset smaller than one batch still trains, as a single full batch.
    batch_size = min(config.batch_size, n_train)
    steps = n_train // batch_size
    budget = _device_budget()
    train = _Split(data.train_x, data.train_y, budget)
    val = _Split(data.val_x, data.val_y, budget - train.device_bytes)
    mean = None if data.mean is None else jnp.asarray(data.mean, jnp.float32)

    history = []
    for epoch in range(start_epoch + 1, config.epochs + 1):
        started = time.perf_counter()
        next_poll = 0.0  # always ask before an epoch's first step

        # --- train: one pass over a fresh shuffle -----------------------------
        # The last partial batch is dropped rather than padded: padding would
        # either skew the gradient or need a masked loss, and reshuffling
        # means every image still gets seen across epochs.
        order = np.random.default_rng([config.seed, epoch]).permutation(n_train)
        order = order[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)
        loss_sum = jnp.zeros((), jnp.float32)
        for idx in order:
            if should_stop is not None and time.monotonic() >= next_poll:
                if should_stop():
                    model, _ = nnx.merge(graphdef, state)
                    return FitResult(model, epoch - 1, True, history)
                next_poll = time.monotonic() + STOP_POLL_SECONDS
            state, loss_sum = _train_step(graphdef, state, loss_sum, *train.batch(idx), mean)
        train_loss = float(loss_sum) / steps  # the one host sync of the pass
        train_seconds = time.perf_counter() - started
        if not math.isfinite(train_loss):
            kind = "NaN" if math.isnan(train_loss) else "infinite"
            raise TrainingError(f"The loss became {kind} at epoch {epoch}; try a lower learning rate.")

        # --- validate -----------------------------------------------------------
        val_loss = val_accuracy = None
        if val.size:
            val_loss, val_accuracy = _evaluate(graphdef, state, val, batch_size, mean)

        # --- report -------------------------------------------------------------
        model, _ = nnx.merge(graphdef, state)
        if on_snapshot is not None:
            on_snapshot(epoch, serialize_model(model))
        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "learning_rate": float(config.learning_rate),
            "images_per_second": steps * batch_size / train_seconds,
            "seconds": time.perf_counter() - started,
        }
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(metrics)

    model, _ = nnx.merge(graphdef, state)
    return FitResult(model, config.epochs, False, history)


def _evaluate(graphdef, state, split: _Split, batch_size: int, mean) -> tuple[float, float]:
    """Mean loss and accuracy over the whole split, padding the final batch."""
    sums = jnp.zeros(2, jnp.float32)
    for start in range(0, split.size, batch_size):
        idx = np.arange(start, start + batch_size, dtype=np.int32)
        valid = idx < split.size
        idx[~valid] = 0
        sums = _eval_step(graphdef, state, sums, *split.batch(idx), valid, mean)
    loss_sum, correct = np.asarray(sums).tolist()
    return loss_sum / split.size, correct / split.size


class _Split:
    """Serves batches of one split, from device memory when it fits the budget.

    ``batch(idx)`` returns ``(x_src, y_src, idx)`` for the jitted steps to
    gather from: the whole split with the caller's indices when it lives on
    the device, otherwise just the batch (read from the host, e.g. a memmap)
    with identity indices.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, budget: int):
        self.size = len(x)
        self.on_device = x.nbytes <= budget
        self.device_bytes = x.nbytes if self.on_device else 0
        if self.on_device:
            self.x, self.y = jax.device_put(x), jax.device_put(np.asarray(y, np.int32))
        else:
            self.x, self.y = x, y

    def batch(self, idx: np.ndarray):
        if self.on_device:
            return self.x, self.y, idx
        return np.asarray(self.x[idx]), np.asarray(self.y[idx], np.int32), np.arange(len(idx), dtype=np.int32)


def _device_budget() -> int:
    stats = jax.devices()[0].memory_stats()
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] * DEVICE_DATA_FRACTION)
    return DEFAULT_DEVICE_DATA_BYTES


# Cached so that repeated fits with the same settings share one optimizer
# object, hence an equal graphdef, hence the already-compiled steps.
@functools.lru_cache(maxsize=16)
def _make_tx(solver: str, learning_rate: float, momentum: float) -> optax.GradientTransformation:
    if solver == "adam":
        return optax.adam(learning_rate)
    return optax.sgd(learning_rate, momentum=momentum)


# --- saving and inference -------------------------------------------------------


def serialize_model(model: nnx.Module) -> bytes:
    """Every variable of ``model`` as an .npz archive keyed by its path ("conv1/kernel")."""
    buffer = io.BytesIO()
    np.savez(buffer, **{key: np.asarray(value) for key, value in _flat_values(model).items()})
    return buffer.getvalue()


def load_model(
    state_bytes: bytes,
    network: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
) -> nnx.Module:
    """Rebuild a model saved by ``serialize_model`` without a throwaway random init."""
    model = nnx.eval_shape(lambda: build_network(network, input_shape, num_classes, rngs=nnx.Rngs(0)))
    _restore(model, state_bytes)
    return model


def predict(model: nnx.Module, images: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """Class probabilities (N, num_classes) for uint8 (N, H, W, C) images."""
    if np.ndim(images) != 4 or len(images) == 0:
        raise ValueError(f"predict needs a non-empty (N, height, width, channels) array; got {np.shape(images)}.")
    graphdef, state = nnx.split(model)
    mean = None if mean is None else jnp.asarray(mean, jnp.float32)
    # Batches are rounded up to a power of two so that any N compiles at most
    # log2(PREDICT_BATCH) + 1 shapes.
    batch = min(PREDICT_BATCH, 1 << (len(images) - 1).bit_length())
    outputs = []
    for start in range(0, len(images), batch):
        chunk = np.asarray(images[start : start + batch])
        padded = np.zeros((batch, *chunk.shape[1:]), chunk.dtype)
        padded[: len(chunk)] = chunk
        outputs.append(_predict_batch(graphdef, state, padded, mean))
    return np.concatenate([np.asarray(out) for out in outputs])[: len(images)]


def _flat_values(model: nnx.Module) -> dict[str, object]:
    return {"/".join(map(str, path)): var.get_value() for path, var in nnx.to_flat_state(nnx.state(model))}


def _restore(model: nnx.Module, state_bytes: bytes) -> None:
    """Load ``serialize_model`` bytes into ``model`` in place, checking they fit it."""
    expected = _flat_values(model)
    # allow_pickle=False: snapshots may come from uploads, and pickles run code.
    with np.load(io.BytesIO(state_bytes), allow_pickle=False) as saved:
        if sorted(saved.files) != sorted(expected):
            raise ValueError("These weights were saved from a different network.")
        flat = []
        for path, var in nnx.to_flat_state(nnx.state(model)):
            value = saved["/".join(map(str, path))]
            if value.shape != var.shape or value.dtype != var.dtype:
                raise ValueError(
                    "These weights were saved for a different image size or number of classes "
                    f"({'/'.join(map(str, path))} is {value.shape}, the network expects {var.shape})."
                )
            flat.append((path, var.replace(jnp.asarray(value))))
    nnx.update(model, nnx.from_flat_state(flat))


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
