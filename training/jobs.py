"""RQ entry points for training: take an id, re-read the row, call the engine, write
one metrics row per epoch and send the same event to the experiment's group.

JAX is imported inside the job, i.e. in the work-horse RQ forked, never in the worker's
parent process: forking after JAX has started its threads deadlocks, and the GPU is
released when the work-horse exits.
"""

import logging
import os
import time

import numpy as np
from django.utils import timezone

from config.events import broadcast
from training.models import EpochMetric, Experiment, Snapshot

log = logging.getLogger(__name__)

ABORT_CHECK_SECONDS = 1.0


def train(experiment_id):
    experiment = Experiment.objects.select_related("dataset").filter(pk=experiment_id).first()
    if experiment is None or not experiment.claim():
        log.info("experiment %s: not queued (deleted, aborted or claimed elsewhere); nothing to do", experiment_id)
        return

    import jax

    from training import engine

    Experiment.objects.filter(pk=experiment.pk).update(device=describe_devices(jax.devices()))
    _send_status(experiment)

    try:
        data = load_arrays(experiment.dataset)
        config = engine.TrainConfig(
            network=experiment.network,
            epochs=experiment.epochs,
            batch_size=experiment.batch_size,
            learning_rate=experiment.learning_rate,
            solver=experiment.solver,
            seed=experiment.seed,
        )
        config.validate()
        result = engine.fit(
            data,
            config,
            on_epoch=lambda metrics: record_epoch(experiment, metrics),
            should_stop=abort_checker(experiment.pk),
            on_snapshot=lambda epoch, state: save_snapshot(experiment, epoch, state),
        )
    except (engine.TrainingError, ValueError) as exc:
        _finish(experiment, Experiment.Status.FAILED, str(exc))
        return
    except Exception as exc:
        log.exception("experiment %s: training crashed", experiment_id)
        _finish(experiment, Experiment.Status.FAILED, f"Training stopped with an internal error: {exc}")
        raise

    _finish(experiment, Experiment.Status.ABORTED if result.stopped else Experiment.Status.DONE)


def describe_devices(devices):
    if devices[0].platform == "cpu":
        return "CPU (this worker has no GPU)"
    kinds = sorted({d.device_kind for d in devices})
    return f"{len(devices)} × {', '.join(kinds)}" if len(devices) > 1 else f"GPU {devices[0].device_kind}"


def load_arrays(dataset):
    """The stored splits, memory-mapped: nothing is decoded, so training starts at once."""
    from training import engine

    folder = dataset.directory

    def load(name):
        try:
            return np.load(folder / f"{name}.npy", mmap_mode="r")
        except FileNotFoundError:
            raise ValueError(
                f"The files of dataset “{dataset.name}” are missing from {folder}; build the dataset again."
            ) from None

    return engine.ArrayData(
        train_x=load("train_images"),
        train_y=load("train_labels"),
        val_x=load("val_images"),
        val_y=load("val_labels"),
        mean=load("mean"),
        num_classes=len(dataset.classes),
    )


def record_epoch(experiment, metrics):
    row = EpochMetric.objects.create(
        experiment=experiment,
        epoch=metrics["epoch"],
        train_loss=metrics["train_loss"],
        val_loss=metrics["val_loss"],
        val_accuracy=metrics["val_accuracy"],
        learning_rate=metrics["learning_rate"],
        images_per_second=metrics["images_per_second"],
        seconds=metrics["seconds"],
    )
    broadcast(experiment.group_name, row.as_event())


def save_snapshot(experiment, epoch, state):
    folder = experiment.directory
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"snapshot-epoch-{epoch}.weights"
    partial = path.with_suffix(".partial")
    partial.write_bytes(state)
    # A reader never sees half a file: the rename is atomic on one filesystem.
    os.replace(partial, path)
    snapshot, _ = Snapshot.objects.update_or_create(experiment=experiment, epoch=epoch, defaults={"path": str(path)})
    broadcast(experiment.group_name, {"type": "snapshot", "epoch": epoch, "id": snapshot.pk})


def abort_checker(experiment_id):
    """should_stop for the engine: reads the abort flag at most once a second."""
    last_check = 0.0
    requested = False

    def should_stop():
        nonlocal last_check, requested
        now = time.monotonic()
        if not requested and now - last_check >= ABORT_CHECK_SECONDS:
            last_check = now
            requested = Experiment.objects.filter(pk=experiment_id, abort_requested=True).exists()
        return requested

    return should_stop


def _finish(experiment, status, error=""):
    experiment.finish(status, error)
    _send_status(experiment)


def _send_status(experiment):
    experiment.refresh_from_db(fields=["status", "error"])
    broadcast(experiment.group_name, {"type": "status", "status": experiment.status, "error": experiment.error})


def on_failure(job, connection, exc_type, exc_value, traceback):
    """RQ calls this when the job dies in a way it could not catch itself (a timeout, a
    killed work-horse): the row must not stay "running"."""
    Experiment.objects.filter(pk=job.args[0], status__in=Experiment.ACTIVE).update(
        status=Experiment.Status.FAILED, error=f"The training job died: {exc_value or exc_type}", finished=timezone.now()
    )
