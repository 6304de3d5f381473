"""Training core: numpy arrays in, trained Flax NNX model and metrics out.

Pure JAX/Flax/optax; nothing here knows about Django, the database or the job
queue. Importing this module imports JAX but does not initialise a backend
(no device is touched until ``fit``, ``predict`` or ``load_model`` runs), so
the caller decides which process owns the accelerator.

Neighbours, also free of Django: ``schedules`` (learning-rate policies, no JAX
at all, for the form's preview), ``solvers`` (optax transformations) and
``augment`` (the on-device data transformations).

``fit`` is one linear loop, read top to bottom: build, restore, place on the
devices, then epochs of jitted steps with validations, snapshots and reports
at the points the config asks for. A snapshot is a full checkpoint (weights,
BatchNorm statistics, optimizer state, position, RNG), so an aborted or
crashed run resumes exactly where it stopped, mid-epoch included.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import inspect
import io
import math
import numbers
import os
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from models.networks import NETWORKS, build_network  # noqa: F401  (NETWORKS re-exported for callers)
from training import augment, schedules, series, solvers
from training.augment import preprocess  # noqa: F401  (re-exported for callers)
from training.config import (  # noqa: F401  (the configuration's home; re-exported for callers)
    EARLY_STOPPING,
    SOLVERS,
    Augmentation,
    LRPolicy,
    TrainConfig,
    interval_problem,
)
from training.schedules import learning_rate_curve  # noqa: F401  (re-exported for callers)

# Keep a split in accelerator memory when it takes at most this share of it;
# bigger splits are gathered on the host batch by batch instead.
DEVICE_DATA_FRACTION = 0.25
# Devices that do not report their memory (the CPU backend) get this budget.
DEFAULT_DEVICE_DATA_BYTES = 2 * 1024**3
# should_stop may hit a database, so ask at most this often.
STOP_POLL_SECONDS = 0.2
# on_progress is for a live page: about twice a second is plenty.
PROGRESS_SECONDS = 0.5
# Host-streamed batches in flight: the next one is copied while this one trains.
PREFETCH_DEPTH = 2
PREDICT_BATCH = 256
CHECKPOINT_FORMAT = 1


class TrainingError(RuntimeError):
    """Training cannot go on; the message is written for the end user."""


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
    epochs_completed: int  # whole epochs done, counting the ones before a resume
    stopped: bool  # should_stop() asked to stop
    history: list[dict]  # every on_epoch metrics dict of this call, in order
    early_stopped: bool = False  # the validation metric stopped improving for `patience` validations
    reinitialized: list[str] = dataclasses.field(default_factory=list)  # pretrained: paths not taken from it


@dataclasses.dataclass
class Checkpoint:
    """Everything a run needs to go on exactly where it stopped.

    Stored as an .npz archive (``serialize_checkpoint``): ``model/<path>`` for
    each model variable (as ``serialize_model`` names them), ``optimizer/<path>``
    for each optax state leaf, and ``meta/<field>`` for the rest.
    """

    model: dict[str, np.ndarray]  # weights, BatchNorm statistics, dropout RNG state
    optimizer: dict[str, np.ndarray]  # momentum, moments, step counts, accumulated gradients
    epoch: int  # whole epochs completed
    step: int  # batches already taken of epoch + 1 (0 at an epoch boundary)
    steps_per_epoch: int
    rng: np.ndarray  # key data of the run's key (augmentation and dropout)
    loss_sum: float = 0.0  # sum of the losses of those `step` batches, for the epoch's train_loss
    best: float | None = None  # early stopping: best value so far (loss, or minus accuracy)
    bad_validations: int = 0  # early stopping: validations since it last improved

    @property
    def position(self) -> int | float:
        """Where training stands, in epochs: an int at an epoch boundary."""
        return _epoch_at(self.epoch * self.steps_per_epoch + self.step, self.steps_per_epoch)


# --- jitted steps -------------------------------------------------------------
# Plain jax.jit over nnx.merge (Flax performance guide): the graph traversal
# happens once at trace time, not on every call, which matters for small
# models like LeNet whose steps are short enough for Python overhead to show.
# Batches are gathered inside the step (x_src[idx]) so that device-resident
# data never round-trips through the host, and the epoch's order lives on the
# device too: the step picks its row by its own step counter, so a training
# step takes no host-to-device transfer at all.


class _TrainState(NamedTuple):
    """What one training step carries to the next (donated, so updated in place)."""

    params: nnx.State
    rest: nnx.State  # everything else the model holds: BatchNorm statistics, dropout RNG counters
    opt_state: optax.OptState
    step: jax.Array  # int32: batches taken since the run began; picks the batch and its random keys
    loss_sum: jax.Array  # float32: this epoch's summed batch losses, read once per epoch


# Cached so repeated fits with equal settings share the compiled steps.
@functools.lru_cache(maxsize=16)
def _compiled_steps(train_def, eval_def, tx, augmentation: Augmentation, call_takes_rngs: bool, replicated):
    def train_step(state: _TrainState, rng, x_src, y_src, order, mean) -> tuple[_TrainState, jax.Array]:
        idx = order[state.step % order.shape[0]]
        # Step k's randomness is a function of (run key, k) alone, so a resumed run
        # draws what the uninterrupted one would have.
        augment_key = jax.random.fold_in(rng, 2 * state.step)
        dropout_key = jax.random.fold_in(rng, 2 * state.step + 1)
        if augmentation.is_random:
            x = augment.train_transform(augmentation, augment_key, x_src[idx], mean)
        else:
            x = augment.eval_transform(augmentation, x_src[idx], mean)
        y = y_src[idx]

        def loss_fn(params):
            # copy=True: fresh variables of the gradient's trace, which BatchNorm may update.
            model = nnx.merge(train_def, params, state.rest, copy=True)
            # The platform's networks take their dropout key with each call; a
            # module that keeps an nnx.Rngs stream instead advances it in `rest`.
            logits = model(x, rngs=dropout_key) if call_takes_rngs else model(x)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            accuracy = jnp.mean(logits.argmax(axis=-1) == y)
            return loss, (nnx.split(model, nnx.Param, ...)[2], accuracy)  # new BatchNorm statistics, RNG counts

        (loss, (rest, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new = _TrainState(params, rest, opt_state, state.step + 1, state.loss_sum + loss)
        if replicated is not None:
            # Data parallel: the batch is split across devices, the state stays whole on each.
            new = jax.lax.with_sharding_constraint(new, replicated)
        # The batch's loss and accuracy, for the curve at iteration resolution; not donated,
        # so it can wait on the device until the host asks for a window of them.
        return new, jnp.stack([loss, accuracy.astype(loss.dtype)])

    def eval_step(params, rest, sums, x_src, y_src, idx, valid, mean):
        model = nnx.merge(eval_def, params, rest)
        logits, y = model(augment.eval_transform(augmentation, x_src[idx], mean)), y_src[idx]
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
        correct = logits.argmax(axis=-1) == y
        # valid masks out the padding of the final partial batch.
        return sums + jnp.stack([jnp.sum(jnp.where(valid, losses, 0.0)), jnp.sum(correct & valid)])

    return jax.jit(train_step, donate_argnums=0), jax.jit(eval_step, donate_argnums=2)


@jax.jit
def _window_mean(points: list[jax.Array]) -> jax.Array:
    return jnp.mean(jnp.stack(points), axis=0)


@functools.partial(jax.jit, static_argnames="augmentation")
def _predict_batch(graphdef, state, x, mean, augmentation):
    return jax.nn.softmax(nnx.merge(graphdef, state)(augment.eval_transform(augmentation, x, mean)))


# --- training -----------------------------------------------------------------


def fit(
    data: ArrayData,
    config: TrainConfig,
    *,
    on_epoch: Callable[[dict], None] | None = None,
    on_validation: Callable[[int | float, float, float, float, float], None] | None = None,
    on_progress: Callable[[int, int, int, float], None] | None = None,
    on_snapshot: Callable[[int | float, bytes], None] | None = None,
    on_steps: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume_from: bytes | None = None,
    pretrained: bytes | None = None,
    start_epoch: int = 0,
    initial_state: bytes | None = None,
) -> FitResult:
    """Train ``config.network`` on ``data`` up to epoch ``config.epochs``.

    Callbacks (all optional, all called from this thread; at an epoch's end
    in the order on_validation, on_epoch, on_snapshot):

    - ``on_epoch(metrics)`` after every epoch: epoch (int), train_loss,
      val_loss and val_accuracy (None when the epoch ended without a
      validation), learning_rate (of the epoch's last update),
      images_per_second (training steps only; the first epoch's includes
      compilation) and seconds (the whole epoch up to this call).
    - ``on_validation(epoch, val_loss, val_accuracy, images_per_second, seconds)``
      after every validation, the epoch-end ones included; ``epoch`` is an int at
      an epoch boundary and a float (e.g. 1.5) within one; images_per_second and
      seconds as on_epoch's, for the part of the epoch trained so far.
    - ``on_progress(epoch, step, steps_per_epoch, images_per_second)`` after
      the first step and then at most every PROGRESS_SECONDS; ``epoch`` counts
      from 1 (the epoch in progress), ``step`` the batches done of it.
    - ``on_steps(steps, losses, accuracies, times)``: the training curve at
      iteration resolution, one point every ``series.step_interval`` batches
      (the mean loss and accuracy of those batches, at the step that ended
      them, with the Unix time it finished: spread evenly over the training
      time since the previous report), handed over in arrays with each
      on_progress, before each validation and at the end: the device is asked
      for them once per report, never once per step.
    - ``on_snapshot(epoch, checkpoint_bytes)`` every ``snapshot_interval``
      epochs, at the end, and once more when stopping between snapshots;
      ``epoch`` as in on_validation. Never called with non-finite weights.
      It comes after on_epoch, so dying between the two re-runs that epoch on
      resume and reports it again with the same numbers: write rows idempotently.
    - ``should_stop()`` before each epoch and then at most every
      STOP_POLL_SECONDS; True ends the run within one step, after a final
      snapshot.

    ``resume_from``: bytes of a snapshot of this same experiment; training goes
    on from its exact position (mid-epoch too) with its optimizer state and
    RNG, so the metrics continue as if never interrupted and no epoch is
    reported twice. ``pretrained``: bytes of weights or a snapshot of another
    experiment: every variable whose path and shape match is loaded, the rest
    (e.g. the classifier for another class count) keeps its fresh
    initialisation and is listed in ``FitResult.reinitialized``; ignored when
    resuming. ``start_epoch``/``initial_state`` are the older, weights-only
    resume (the optimizer restarts); prefer ``resume_from``.

    Raises ValueError for a bad config, dataset or snapshot, TrainingError if
    the loss diverges or the device runs out of memory.
    """
    config.validate()
    data.validate()
    aug = config.augmentation
    aug.validate(data.input_shape)
    if not _is_int(start_epoch) or not 0 <= start_epoch <= config.epochs:
        raise ValueError(f"start_epoch must be between 0 and {config.epochs}; got {start_epoch!r}.")
    if resume_from is not None and (start_epoch or initial_state is not None):
        raise ValueError("Resume either from a snapshot (resume_from) or from an epoch's weights, not both.")
    if config.early_stopping and not len(data.val_x):
        raise ValueError("Early stopping watches the validation split, and this dataset has none.")

    n_train = len(data.train_x)
    batch_size = min(config.batch_size, n_train)  # a split smaller than a batch trains as one batch
    steps = schedules.steps_per_epoch(n_train, config.batch_size)
    for name in ("val_interval", "snapshot_interval"):
        problem = interval_problem(config, name, steps)
        if problem:
            raise ValueError(problem)
    schedules.check_rates(config, steps)
    total_updates = schedules.total_updates(steps, config.epochs, config.batch_accumulation)
    schedule = config.lr_policy.schedule(config.learning_rate, total_updates)
    tx = solvers.make(
        config.solver,
        schedule,
        momentum=config.momentum,
        weight_decay=config.resolved_weight_decay,
        rms_decay=config.rms_decay,
        adadelta_decay=config.adadelta_decay,
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        delta=config.delta,
        batch_accumulation=config.batch_accumulation,
    )

    # --- model: fresh, pretrained, or restored --------------------------------------
    input_shape = aug.input_shape(data.input_shape)
    model = build_network(config.network, input_shape, data.num_classes, rngs=nnx.Rngs(config.seed))
    checkpoint = None if resume_from is None else read_checkpoint(resume_from)
    reinitialized = []
    if checkpoint is not None:
        if checkpoint.steps_per_epoch != steps:
            raise ValueError(
                "This snapshot was taken with a different batch size or training split; it cannot be resumed here."
            )
        if checkpoint.epoch > config.epochs:
            raise ValueError(f"This snapshot is from epoch {checkpoint.epoch}, past the {config.epochs} to train.")
        _load_arrays(model, checkpoint.model, strict=True)
    elif pretrained is not None:
        reinitialized = _load_arrays(model, _read_weights(pretrained), strict=False)
    if initial_state is not None:
        _load_arrays(model, _read_weights(initial_state), strict=True)
    train_def, eval_def, params, rest = _split_modes(model)

    # --- the state a step carries ------------------------------------------------------
    opt_state = tx.init(params)
    if checkpoint is None:
        done_epochs, done_steps, loss_sum, rng = start_epoch, 0, 0.0, jax.random.key(config.seed)
        early = _EarlyStopping(config.early_stopping, config.patience)
    else:
        opt_state = _opt_state_from(opt_state, checkpoint.optimizer)
        done_epochs, done_steps, loss_sum = checkpoint.epoch, checkpoint.step, checkpoint.loss_sum
        rng = jax.random.wrap_key_data(jnp.asarray(checkpoint.rng))
        early = _EarlyStopping(config.early_stopping, config.patience, checkpoint.best, checkpoint.bad_validations)
    g = done_epochs * steps + done_steps  # batches taken since the run began
    state = _TrainState(params, rest, opt_state, jnp.int32(g), jnp.float32(loss_sum))

    # --- devices: data parallel when there are several -------------------------------
    # One device: no mesh and no sharding at all, so nothing extra runs.
    mesh = _mesh(batch_size)
    replicated = batch_sharding = None
    if mesh is not None:
        replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
        state, rng = jax.device_put((state, rng), replicated)
    call_takes_rngs = "rngs" in inspect.signature(type(model).__call__).parameters
    train_step, eval_step = _compiled_steps(train_def, eval_def, tx, aug, call_takes_rngs, replicated)

    history = []
    saved_at = g  # the position of the newest snapshot the caller holds (a resume point counts)

    # --- the curve at iteration resolution: a point every `every` batches ---------------
    every = series.step_interval(steps, config.epochs)
    window: list[jax.Array] = []  # this window's per-batch [loss, accuracy], still on the device
    points: list[tuple[int, jax.Array]] = []  # finished windows: step, device mean
    # Steps are dispatched ahead of the device, so the host's clock at dispatch says little:
    # a report waits for its steps, and they are spread over the time since the last one.
    reported = (g, time.time())

    def close_window() -> None:
        if window:
            points.append((g, window[0] if len(window) == 1 else _window_mean(window)))
            window.clear()

    def resume_clock() -> None:
        """After a pause (validation, snapshot, the epoch's end): the next steps' time starts now."""
        nonlocal reported
        if not points:
            reported = (g, time.time())

    def report_steps(*, partial: bool = False) -> None:
        """Hand the finished windows to on_steps, in one transfer; `partial` closes the
        window in progress too (the run stops, or its epoch ends without a boundary)."""
        nonlocal reported
        if partial:
            close_window()
        if not points or on_steps is None:
            return
        values = np.asarray(jax.device_get([value for _, value in points]), dtype=np.float32).reshape(-1, 2)
        now = time.time()  # those steps are done: device_get waited for them
        at = np.array([step for step, _ in points], np.int64)
        since, then = reported
        times = then + (at - since) / max(int(at[-1]) - since, 1) * (now - then)
        on_steps(at, values[:, 0], values[:, 1], times)
        points.clear()
        reported = (int(at[-1]), now)

    def snapshot(epoch: int) -> None:
        """Hand the caller a checkpoint of the current position, refusing non-finite weights."""
        nonlocal saved_at
        if saved_at == g or on_snapshot is None:
            saved_at = g
            return
        _check_finite(float(state.loss_sum), epoch)
        ckpt = _checkpoint(state, rng, g, steps, early)
        if not all(np.isfinite(a).all() for a in ckpt.model.values() if np.issubdtype(a.dtype, np.floating)):
            raise TrainingError(f"The weights became NaN or infinite at epoch {epoch}; try a lower learning rate.")
        on_snapshot(_epoch_at(g, steps), serialize_checkpoint(ckpt))
        saved_at = g

    def result(*, stopped: bool = False, early_stopped: bool = False) -> FitResult:
        report_steps(partial=True)
        nnx.update(model, state.params, state.rest)
        return FitResult(model, g // steps, stopped, history, early_stopped, reinitialized)

    with _device_errors():
        # --- data on the device when it fits, streamed from the host when not -------------
        budget = _device_budget()
        train = _Split(data.train_x, data.train_y, budget, replicated, batch_sharding)
        val = _Split(data.val_x, data.val_y, budget - train.device_bytes, replicated, batch_sharding)
        mean = augment.resolve_mean(aug, data.mean)
        if mean is not None:
            mean = jax.device_put(mean, replicated)

        validations = _Every(config.val_interval if val.size else 0, steps, after=g)
        snapshots = _Every(config.snapshot_interval, steps, after=g)
        next_progress = 0.0  # report right after the first step: time to first step

        def validate(epoch: int) -> tuple[float, float, bool]:
            """Validate now; report it; return loss, accuracy and whether to stop early."""
            jax.block_until_ready(state.step)  # an honest rate: count finished steps only
            trained = g - (epoch - 1) * steps - first
            rate = trained * batch_size / max(time.perf_counter() - started - paused, 1e-9)
            report_steps()
            val_loss, val_accuracy = _evaluate(eval_step, state, val, batch_size, mean)
            _check_finite(val_loss, epoch)
            if on_validation is not None:
                on_validation(_epoch_at(g, steps), val_loss, val_accuracy, rate, time.perf_counter() - started)
            return val_loss, val_accuracy, early.update(val_loss, val_accuracy)

        for epoch in range(done_epochs + 1, config.epochs + 1):
            started = time.perf_counter()
            paused = 0.0  # time in mid-epoch validations and snapshots, kept out of images_per_second
            first = done_steps if epoch == done_epochs + 1 else 0
            if first == 0:
                state = state._replace(loss_sum=jnp.zeros((), jnp.float32))
            next_poll = 0.0  # always ask before an epoch's first step
            resume_clock()
            next_event = min(validations.next, snapshots.next)

            # --- train: one pass over this epoch's order -----------------------------------
            # The last partial batch is dropped rather than padded: padding would
            # either skew the gradient or need a masked loss, and reshuffling
            # means every image still gets seen across epochs.
            order = _epoch_order(config, epoch, n_train, steps, batch_size)
            for x_src, y_src, rows in train.batches(order, first):
                if should_stop is not None and time.monotonic() >= next_poll:
                    if should_stop():
                        snapshot(epoch)
                        return result(stopped=True)
                    next_poll = time.monotonic() + STOP_POLL_SECONDS
                state, point = train_step(state, rng, x_src, y_src, rows, mean)
                g += 1
                if on_steps is not None:
                    window.append(point)
                    if g % every == 0:
                        close_window()
                if on_progress is not None and time.monotonic() >= next_progress:
                    jax.block_until_ready(state.step)  # an honest rate: count finished steps only
                    seconds = time.perf_counter() - started - paused
                    step_in_epoch = g - (epoch - 1) * steps
                    on_progress(epoch, step_in_epoch, steps, (step_in_epoch - first) * batch_size / seconds)
                    report_steps()
                    next_progress = time.monotonic() + PROGRESS_SECONDS

                # --- within the epoch: validation and snapshot when due ---------------------
                if g >= next_event and g % steps:
                    pause = time.perf_counter()
                    stop_early = validations.due(g) and validate(epoch)[2]
                    if snapshots.due(g) or stop_early:
                        snapshot(epoch)
                    if stop_early:
                        return result(early_stopped=True)
                    next_event = min(validations.next, snapshots.next)
                    paused += time.perf_counter() - pause
                    resume_clock()

            # --- end of epoch: loss, validation, report, snapshot ---------------------------
            train_loss = float(state.loss_sum) / steps  # the one host sync of the pass
            train_seconds = time.perf_counter() - started - paused
            report_steps()
            _check_finite(train_loss, epoch)
            val_loss = val_accuracy = None
            stop_early = False
            if (validations.due(g) or epoch == config.epochs) and val.size:
                val_loss, val_accuracy, stop_early = validate(epoch)
            metrics = {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "learning_rate": float(schedule(max(g // config.batch_accumulation - 1, 0))),
                "images_per_second": (steps - first) * batch_size / train_seconds,
                "seconds": time.perf_counter() - started,
            }
            history.append(metrics)
            if on_epoch is not None:
                on_epoch(metrics)
            # After the report: dying in between re-runs this epoch from the previous
            # snapshot and reports it again, identically, rather than losing its row.
            if snapshots.due(g) or epoch == config.epochs or stop_early:
                snapshot(epoch)
            if stop_early:
                return result(early_stopped=True)

    return result()


def _split_modes(model: nnx.Module):
    """Graphdefs for training (dropout on, batch statistics) and evaluation
    (dropout off, running averages), plus the weights and the rest of the state.

    Both graphdefs describe the same variables, so one state serves both. The
    views are models.networks.train_mode/eval_mode, spelled out so that any
    NNX module trains, whichever mode it was built in.
    """
    train_def, params, rest = nnx.split(_mode(model, training=True), nnx.Param, ...)
    # Walking a big network's graph once more costs tens of milliseconds; runs of
    # the same network share their eval graphdef instead.
    eval_def = _EVAL_GRAPHDEFS.get(train_def)
    if eval_def is None:
        if len(_EVAL_GRAPHDEFS) >= 16:
            _EVAL_GRAPHDEFS.clear()
        eval_def = _EVAL_GRAPHDEFS[train_def] = nnx.graphdef(_mode(model, training=False))
    return train_def, eval_def, params, rest


_EVAL_GRAPHDEFS: dict = {}


def _mode(model: nnx.Module, *, training: bool) -> nnx.Module:
    return nnx.view(model, deterministic=not training, use_running_average=not training, raise_if_not_found=False)


def _evaluate(eval_step, state: _TrainState, split: _Split, batch_size: int, mean) -> tuple[float, float]:
    """Mean loss and accuracy over the whole split, padding the final batch."""
    sums = jnp.zeros(2, jnp.float32)
    for x_src, y_src, idx, valid in split.eval_batches(batch_size):
        sums = eval_step(state.params, state.rest, sums, x_src, y_src, idx, valid, mean)
    loss_sum, correct = np.asarray(sums).tolist()
    return loss_sum / split.size, correct / split.size


def _epoch_order(config: TrainConfig, epoch: int, n: int, steps: int, batch_size: int) -> np.ndarray:
    """(steps, batch_size) image indices of one epoch, the same for any resume of it."""
    order = np.random.default_rng([config.seed, epoch]).permutation(n) if config.shuffle else np.arange(n)
    return order[: steps * batch_size].reshape(steps, batch_size).astype(np.int32)


class _Every:
    """The batches, counted from the start of the run, at which an event due every
    ``interval`` epochs falls; 0 means never. Epoch multiples land exactly on
    epoch ends, fractions on the batch where that fraction of the epoch is done."""

    def __init__(self, interval: float, steps_per_epoch: int, *, after: int):
        self.interval, self.steps = interval, steps_per_epoch
        self.next = self._at(1)
        self.due(after)

    def _at(self, k: int) -> float:
        if not self.interval:
            return math.inf
        # round() first: 3 * 0.1 epochs must be 0.3, not 0.30000000000000004, of the steps.
        return math.ceil(round(k * self.interval * self.steps, 6))

    def due(self, g: int) -> bool:
        """Whether an event fell in the batches up to ``g`` since the last call."""
        if g < self.next:
            return False
        per_event = self.interval * self.steps  # batches
        if per_event <= 1:
            self.next = g + 1  # one or more events in every batch
            return True
        # The next event after g, computed rather than counted up to: a resume deep into
        # a run would otherwise walk every event in between.
        k = max(1, math.floor(g / per_event))
        while self._at(k) <= g:
            k += 1
        while k > 1 and self._at(k - 1) > g:
            k -= 1
        self.next = self._at(k)
        return True


class _EarlyStopping:
    """Counts validations without improvement; best is stored as lower-is-better."""

    def __init__(self, metric: str | None, patience: int, best: float | None = None, bad: int = 0):
        self.metric, self.patience, self.best, self.bad = metric, patience, best, bad

    def update(self, val_loss: float, val_accuracy: float) -> bool:
        """Record one validation; True when training should stop now."""
        if self.metric is None:
            return False
        value = val_loss if self.metric == "val_loss" else -val_accuracy
        if self.best is None or value < self.best:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        return self.bad >= self.patience


def _check_finite(loss: float, epoch: int) -> None:
    if not math.isfinite(loss):
        kind = "NaN" if math.isnan(loss) else "infinite"
        raise TrainingError(f"The loss became {kind} at epoch {epoch}; try a lower learning rate.")


def _epoch_at(g: int, steps: int) -> int | float:
    return g // steps if g % steps == 0 else round(g / steps, 4)


# --- devices and data ---------------------------------------------------------------


class _Split:
    """Serves batches of one split, from device memory when it fits the budget.

    On the device, the whole split is uploaded once (whole on every device
    when data parallel) and steps gather their batch from it. Otherwise each
    batch is read from the host (e.g. a memmap) and copied over while the
    previous one trains (PREFETCH_DEPTH).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, budget: int, replicated, batch_sharding):
        self.size = len(x)
        self.on_device = x.nbytes <= budget
        self.device_bytes = x.nbytes if self.on_device else 0
        self.batch_sharding = batch_sharding
        self.rows_sharding = None if batch_sharding is None else NamedSharding(batch_sharding.mesh, P(None, "data"))
        if self.on_device:
            self.x, self.y = jax.device_put((x, np.asarray(y, np.int32)), replicated)
        else:
            self.x, self.y = x, y

    def batches(self, order: np.ndarray, first: int) -> Iterator[tuple]:
        """(x_src, y_src, rows) for each training step from row ``first`` of ``order``."""
        if self.on_device:
            rows = jax.device_put(order, self.rows_sharding)  # once per epoch
            for _ in range(first, len(order)):
                yield self.x, self.y, rows
            return
        rows = jax.device_put(np.arange(order.shape[1], dtype=np.int32)[None], self.rows_sharding)
        host = ((np.asarray(self.x[idx]), np.asarray(self.y[idx], np.int32)) for idx in order[first:])
        for x, y in _prefetch(host, self.batch_sharding):
            yield x, y, rows

    def eval_batches(self, batch_size: int) -> Iterator[tuple]:
        """(x_src, y_src, idx, valid) covering the split, the last batch padded."""

        def host():
            for start in range(0, self.size, batch_size):
                idx = np.arange(start, start + batch_size, dtype=np.int32)
                valid = idx < self.size
                idx[~valid] = 0
                if self.on_device:
                    yield idx, valid
                else:
                    identity = np.arange(batch_size, dtype=np.int32)
                    yield np.asarray(self.x[idx]), np.asarray(self.y[idx], np.int32), identity, valid

        for batch in _prefetch(host(), self.batch_sharding):
            yield (self.x, self.y, *batch) if self.on_device else batch


def _prefetch(batches: Iterator[tuple], sharding) -> Iterator[tuple]:
    """Device copies of host batches, the next transfers started before this one is used."""
    queue = collections.deque()
    for batch in batches:
        queue.append(jax.device_put(batch, sharding))
        if len(queue) >= PREFETCH_DEPTH:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def _data_devices() -> list:
    """The devices to train on (tests narrow this to compare one device with several)."""
    return jax.devices()


def _mesh(batch_size: int) -> Mesh | None:
    """A one-axis mesh over as many devices as evenly split the batch, or None for one."""
    devices = _data_devices()
    n = max(d for d in range(1, len(devices) + 1) if batch_size % d == 0)
    return Mesh(np.array(devices[:n]), ("data",)) if n > 1 else None


def _device_budget() -> int:
    stats = jax.devices()[0].memory_stats()
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] * DEVICE_DATA_FRACTION)
    return DEFAULT_DEVICE_DATA_BYTES


@contextlib.contextmanager
def _device_errors():
    """Turn the accelerator running out of memory into a message for the user."""
    try:
        yield
    except jax.errors.JaxRuntimeError as exc:
        if "RESOURCE_EXHAUSTED" in str(exc) or "out of memory" in str(exc).lower():
            raise TrainingError(
                "The device ran out of memory. Try a smaller batch size (batch accumulation keeps the "
                "effective batch), a smaller crop size or a smaller network."
            ) from exc
        raise


def enable_compilation_cache(directory: str | os.PathLike) -> None:
    """Keep compiled programs in ``directory`` so later processes skip compiling.

    Call once per process before training (the job does, in the work-horse):
    the second experiment with the same network, batch and settings then
    starts training in well under a second instead of compiling. Every program
    is cached, however quick its compile, since even LeNet's steps take
    seconds on a GPU. JAX trusts what it finds there: the directory must be
    writable only by the platform's own user.
    """
    from jax.experimental.compilation_cache import compilation_cache

    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", os.fspath(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    # JAX decides once per process whether the cache is on; ask it again.
    compilation_cache.reset_cache()


# --- saving and inference -------------------------------------------------------


def serialize_model(model: nnx.Module) -> bytes:
    """Every variable of ``model`` as an .npz archive keyed by its path ("conv1/kernel")."""
    buffer = io.BytesIO()
    np.savez(buffer, **_flat_arrays(nnx.state(model)))
    return buffer.getvalue()


def serialize_checkpoint(checkpoint: Checkpoint) -> bytes:
    """A Checkpoint as an .npz archive (plain arrays only, so it loads without pickle)."""
    meta = {
        "format": CHECKPOINT_FORMAT,
        "epoch": checkpoint.epoch,
        "step": checkpoint.step,
        "steps_per_epoch": checkpoint.steps_per_epoch,
        "rng": checkpoint.rng,
        "loss_sum": checkpoint.loss_sum,
        "best": math.nan if checkpoint.best is None else checkpoint.best,
        "bad_validations": checkpoint.bad_validations,
    }
    arrays = {f"meta/{k}": np.asarray(v) for k, v in meta.items()}
    arrays.update({f"model/{k}": v for k, v in checkpoint.model.items()})
    arrays.update({f"optimizer/{k}": v for k, v in checkpoint.optimizer.items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_checkpoint(state_bytes: bytes) -> Checkpoint:
    """Parse ``serialize_checkpoint`` bytes; ValueError for anything else."""
    with _open_npz(state_bytes) as saved:
        if "meta/format" not in saved.files:
            raise ValueError("This file holds weights only, not a snapshot that training can resume from.")
        if int(saved["meta/format"]) != CHECKPOINT_FORMAT:
            raise ValueError("This snapshot was written by another version of the platform.")
        section = {
            prefix: {k[len(prefix) + 1 :]: saved[k] for k in saved.files if k.startswith(prefix + "/")}
            for prefix in ("model", "optimizer", "meta")
        }
    meta = section["meta"]
    best = float(meta["best"])
    return Checkpoint(
        model=section["model"],
        optimizer=section["optimizer"],
        epoch=int(meta["epoch"]),
        step=int(meta["step"]),
        steps_per_epoch=int(meta["steps_per_epoch"]),
        rng=meta["rng"],
        loss_sum=float(meta["loss_sum"]),
        best=None if math.isnan(best) else best,
        bad_validations=int(meta["bad_validations"]),
    )


def load_model(
    state_bytes: bytes,
    network: str | Mapping,
    input_shape: tuple[int, int, int],
    num_classes: int,
) -> nnx.Module:
    """Rebuild a model from ``serialize_model`` bytes or a snapshot, without a throwaway random init.

    ``input_shape`` is what the network takes: with a crop, the crop's
    (``Augmentation.input_shape`` of the dataset's image shape).
    """
    model = nnx.eval_shape(lambda: build_network(network, input_shape, num_classes, rngs=nnx.Rngs(0)))
    _load_arrays(model, _read_weights(state_bytes), strict=True)
    return model


def predict(
    model: nnx.Module,
    images: np.ndarray,
    mean: np.ndarray | None,
    augmentation: Augmentation | None = None,
) -> np.ndarray:
    """Class probabilities (N, num_classes) for uint8 (N, H, W, C) images, in eval mode.

    Without ``augmentation``, images are ``(x - mean) / 255`` as given. With
    the training run's Augmentation, they get exactly its validation
    transform: ``mean`` (the dataset's mean image) is used as its
    ``use_mean`` says, and images are centre-cropped to ``crop_size``.
    """
    if np.ndim(images) != 4 or len(images) == 0:
        raise ValueError(f"predict needs a non-empty (N, height, width, channels) array; got {np.shape(images)}.")
    if augmentation is None:
        augmentation = Augmentation(use_mean="image")
    else:
        mean = augment.resolve_mean(augmentation, mean)
    graphdef, state = nnx.split(_mode(model, training=False))
    mean = None if mean is None else jnp.asarray(mean, jnp.float32)
    # Batches are rounded up to a power of two so that any N compiles at most
    # log2(PREDICT_BATCH) + 1 shapes.
    batch = min(PREDICT_BATCH, 1 << (len(images) - 1).bit_length())
    outputs = []
    for start in range(0, len(images), batch):
        chunk = np.asarray(images[start : start + batch])
        padded = np.zeros((batch, *chunk.shape[1:]), chunk.dtype)
        padded[: len(chunk)] = chunk
        outputs.append(_predict_batch(graphdef, state, padded, mean, augmentation))
    return np.concatenate([np.asarray(out) for out in outputs])[: len(images)]


def _checkpoint(state: _TrainState, rng, g: int, steps: int, early: _EarlyStopping) -> Checkpoint:
    leaves = jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
    return Checkpoint(
        model={**_flat_arrays(state.params), **_flat_arrays(state.rest)},
        optimizer={_tree_path(path): np.asarray(leaf) for path, leaf in leaves},
        epoch=g // steps,
        step=g % steps,
        steps_per_epoch=steps,
        rng=np.asarray(jax.random.key_data(rng)),
        loss_sum=float(state.loss_sum),
        best=early.best,
        bad_validations=early.bad,
    )


def _opt_state_from(template: optax.OptState, arrays: dict[str, np.ndarray]) -> optax.OptState:
    """Fill a fresh optimizer state's structure with saved leaves, checking they fit."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    if sorted(arrays) != sorted(_tree_path(path) for path, _ in leaves):
        raise ValueError(
            "This snapshot was taken with another solver, learning rate policy or batch accumulation; "
            "it cannot be resumed."
        )
    restored = []
    for path, leaf in leaves:
        value = arrays[_tree_path(path)]
        if value.shape != leaf.shape:
            raise ValueError("This snapshot's optimizer state does not fit this network; it cannot be resumed.")
        restored.append(jnp.asarray(value, leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, restored)


def _tree_path(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def _flat_arrays(state: nnx.State) -> dict[str, np.ndarray]:
    """Host copies of every variable, keyed "conv1/kernel"; RNG keys as their raw key data."""
    return {"/".join(map(str, path)): _to_host(var.get_value()) for path, var in nnx.to_flat_state(state)}


def _to_host(value) -> np.ndarray:
    if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        value = jax.random.key_data(value)
    return np.asarray(value)


def _open_npz(state_bytes: bytes):
    # allow_pickle=False: snapshots may come from uploads, and pickles run code.
    try:
        saved = np.load(io.BytesIO(state_bytes), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError("This file is not a snapshot or weights file of this platform.") from exc
    if not isinstance(saved, np.lib.npyio.NpzFile):
        raise ValueError("This file is not a snapshot or weights file of this platform.")
    return saved


def _read_weights(state_bytes: bytes) -> dict[str, np.ndarray]:
    """The model variables of ``serialize_model`` bytes or of a snapshot."""
    with _open_npz(state_bytes) as saved:
        if "meta/format" in saved.files:
            return {k[len("model/") :]: saved[k] for k in saved.files if k.startswith("model/")}
        return {k: saved[k] for k in saved.files}


def _load_arrays(model: nnx.Module, arrays: dict[str, np.ndarray], *, strict: bool) -> list[str]:
    """Load saved arrays into ``model`` in place; return the paths left as initialised.

    strict (resume, inference): every variable must be there, with its shape.
    Otherwise (pretrained weights) whatever matches by path and shape is
    loaded and the rest keeps its fresh initialisation; the run keeps its own
    dropout RNG state either way.
    """
    variables = nnx.to_flat_state(nnx.state(model))
    names = ["/".join(map(str, path)) for path, _ in variables]
    if strict and sorted(arrays) != sorted(names):
        raise ValueError("These weights were saved from a different network.")
    loaded, skipped = [], []
    for name, (path, var) in zip(names, variables, strict=True):
        current = var.get_value()
        is_rng = jax.dtypes.issubdtype(current.dtype, jax.dtypes.prng_key)
        if is_rng and not strict:
            continue
        saved = arrays.get(name)
        if saved is not None and is_rng:
            saved = jax.random.wrap_key_data(jnp.asarray(saved))
        if saved is not None and saved.shape == current.shape and (is_rng or saved.dtype == current.dtype):
            loaded.append((path, var.replace(jnp.asarray(saved))))
        elif strict:
            raise ValueError(
                "These weights were saved for a different image size or number of classes "
                f"({name} is {None if saved is None else saved.shape}, the network expects {current.shape})."
            )
        else:
            skipped.append(name)
    if not strict and not loaded:
        raise ValueError("These pretrained weights share no layer with this network.")
    nnx.update(model, nnx.from_flat_state(loaded))
    return skipped


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
