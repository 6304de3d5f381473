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
from django.conf import settings
from rq import get_current_job

from jobs.events import broadcast
from jobs.heartbeat import Heartbeat
from quotas import usage as quota_usage
from training import config as training_config
from training import devices, series
from training.models import EpochMetric, Experiment, LogLine, Snapshot

log = logging.getLogger(__name__)

ABORT_CHECK_SECONDS = 0.5


def train(experiment_id):
    experiment = Experiment.objects.select_related("dataset", "pretrained").filter(pk=experiment_id).first()
    rq_job = get_current_job()
    if experiment is None or not experiment.claim(rq_job.id if rq_job else None):
        log.info("experiment %s: not queued (deleted, aborted or claimed elsewhere); nothing to do", experiment_id)
        return

    import jax

    from training import engine

    engine.enable_compilation_cache(settings.JAX_CACHE_DIR)
    accelerators = jax.devices()
    Experiment.objects.filter(pk=experiment.pk).update(device=describe_devices(accelerators))
    run = Run(experiment)
    heartbeat = HardwareHeartbeat(experiment)
    heartbeat.start()
    try:
        data = load_arrays(experiment.dataset)
        config = training_config.from_experiment(experiment)
        config.validate()
        resume_from = run.latest_checkpoint()
        pretrained = None
        if resume_from is not None:
            run.log(f"Resuming from the snapshot at epoch {run.resumed_at:g}.")
        elif experiment.pretrained is not None:
            pretrained = _read(experiment.pretrained.path)
            source = experiment.pretrained
            run.log(f"Starting from the weights of {source.experiment} at epoch {source.epoch_label}.")
        run.log(
            f"Training {experiment.network_title} on {len(data.train_y)} images, validating on "
            f"{len(data.val_y)}, on {describe_devices(accelerators)}."
        )
        result = engine.fit(
            data,
            config,
            on_epoch=run.on_epoch,
            on_validation=run.on_validation,
            on_progress=run.on_progress,
            on_snapshot=run.on_snapshot,
            on_steps=run.on_steps,
            should_stop=abort_checker(experiment.pk),
            resume_from=resume_from,
            pretrained=pretrained,
        )
    except (engine.TrainingError, ValueError) as exc:
        run.log(str(exc), level="error")
        _finish(experiment, Experiment.Status.FAILED, str(exc))
        return
    except Exception as exc:
        log.exception("experiment %s: training crashed", experiment_id)
        _finish(experiment, Experiment.Status.FAILED, f"Training stopped with an internal error: {exc}")
        raise
    finally:
        heartbeat.stop()

    if result.reinitialized:
        run.log("Not taken from the pretrained weights (new for this dataset): " + ", ".join(result.reinitialized))
    if result.stopped:
        run.log(
            "Aborted; the last snapshot keeps where it stopped, so it can be resumed."
            if experiment.snapshots.exists()
            else "Aborted before the first snapshot, so there is nothing to resume from."
        )
        _finish(experiment, Experiment.Status.ABORTED)
    elif result.early_stopped and result.epochs_completed < experiment.epochs:
        message = f"Stopped early after epoch {result.epochs_completed}: validation stopped improving."
        run.log(message)
        _finish(experiment, Experiment.Status.DONE)
    else:
        run.log("Training finished.")
        _finish(experiment, Experiment.Status.DONE)


class Run:
    """The engine's callbacks for one experiment: rows, files and live events."""

    def __init__(self, experiment):
        self.experiment = experiment
        self.last_validation = (None, None, None)  # epoch, loss, accuracy
        snapshot = experiment.snapshots.order_by("-epoch").first()
        self.resume_snapshot = snapshot
        self.resumed_at = snapshot.epoch if snapshot else 0

    def latest_checkpoint(self):
        if self.resume_snapshot is None:
            return None
        return _read(self.resume_snapshot.path)

    def log(self, message, level="info"):
        line = LogLine.objects.create(experiment=self.experiment, level=level, message=message)
        broadcast(self.experiment.group_name, line.as_event())

    def on_epoch(self, metrics):
        row, _ = EpochMetric.objects.update_or_create(
            experiment=self.experiment,
            epoch=metrics["epoch"],
            defaults={
                "train_loss": metrics["train_loss"],
                "val_loss": metrics["val_loss"],
                "val_accuracy": metrics["val_accuracy"],
                "learning_rate": metrics["learning_rate"],
                "images_per_second": metrics["images_per_second"],
                "seconds": metrics["seconds"],
            },
        )
        broadcast(self.experiment.group_name, row.as_event())
        self.experiment.announce()  # the console's epoch and accuracy columns
        accuracy = "" if row.val_accuracy is None else f", validation accuracy {100 * row.val_accuracy:.1f}%"
        self.log(
            f"Epoch {row.epoch:g}: train loss {row.train_loss:.4f}{accuracy} ({row.images_per_second:.0f} images/s)"
        )

    def on_validation(self, epoch, val_loss, val_accuracy, images_per_second, seconds):
        self.last_validation = (epoch, val_loss, val_accuracy)
        if float(epoch).is_integer():
            return  # the epoch's own row carries it (on_epoch comes next)
        row, _ = EpochMetric.objects.update_or_create(
            experiment=self.experiment,
            epoch=epoch,
            defaults={
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "train_loss": None,
                "images_per_second": images_per_second,
                "seconds": seconds,
            },
        )
        broadcast(self.experiment.group_name, row.as_event())

    def on_progress(self, epoch, step, steps, images_per_second):
        remaining = (steps - step) + steps * (self.experiment.epochs - epoch)
        batch = self.experiment.batch_size
        progress = {
            "epoch": epoch,
            "step": step,
            "steps": steps,
            "images_per_second": round(images_per_second, 1),
            "eta_seconds": round(remaining * batch / images_per_second, 1) if images_per_second > 0 else None,
        }
        Experiment.objects.filter(pk=self.experiment.pk).update(progress=progress)
        broadcast(self.experiment.group_name, {"type": "progress", **progress})
        self.experiment.announce()

    def on_snapshot(self, epoch, state):
        folder = self.experiment.directory
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"snapshot-epoch-{epoch:g}.ckpt"
        partial = path.with_suffix(".partial")
        partial.write_bytes(state)
        # A reader never sees half a file: the rename is atomic on one filesystem.
        os.replace(partial, path)
        # Figures measured elsewhere (an abort at 1.0581 after the validation of epoch 1)
        # would pass for this snapshot's own: it gets none then.
        measured_at, val_loss, val_accuracy = self.last_validation
        if measured_at != epoch:
            val_loss = val_accuracy = None
        snapshot, _ = Snapshot.objects.update_or_create(
            experiment=self.experiment,
            epoch=epoch,
            defaults={"path": str(path), "size_bytes": len(state), "val_loss": val_loss, "val_accuracy": val_accuracy},
        )
        broadcast(self.experiment.group_name, {"type": "snapshot", "epoch": epoch, "id": snapshot.pk})
        for old in retired_snapshots(self.experiment):
            kept = self.experiment.keep_snapshots
            self.log(f"Removed the snapshot of epoch {old.epoch_label} (keeping the last {kept} and the best).")
            removed = {"type": "snapshot_removed", "epoch": old.epoch, "id": old.pk}
            _remove_snapshot(old)
            broadcast(self.experiment.group_name, removed)

    def on_steps(self, steps, losses, accuracies, times):
        """The curve at iteration resolution: appended to the run's file, and the new
        points, cut down to a handful, sent to the page."""
        folder = self.experiment.directory
        folder.mkdir(parents=True, exist_ok=True)
        series.append(folder / series.FILE_NAME, steps, losses, accuracies, times)
        records = np.empty(len(steps), series.RECORD)
        records["step"], records["loss"], records["accuracy"], records["time"] = steps, losses, accuracies, times
        started = self.experiment.started.timestamp() if self.experiment.started else float(times[0])
        broadcast(
            self.experiment.group_name,
            {"type": "steps", **series.chart_series(records, started, max_points=series.LIVE_POINTS)},
        )


def retired_snapshots(experiment):
    """Snapshots the retention rule no longer keeps: all but the newest K and the best
    (by validation loss). K = 0 keeps everything."""
    keep = experiment.keep_snapshots
    snapshots = list(experiment.snapshots.order_by("-epoch"))
    if keep == 0 or len(snapshots) <= keep:
        return []
    scored = [s for s in snapshots if s.val_loss is not None]
    best = min(scored, key=lambda s: s.val_loss) if scored else None
    return [s for s in snapshots[keep:] if s != best]


def _remove_snapshot(snapshot):
    path = snapshot.path
    snapshot.delete()
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


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


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ValueError(f"The snapshot file {path} is missing.") from None


def abort_checker(experiment_id):
    """should_stop for the engine: reads the abort flag at most twice a second."""
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


class HardwareHeartbeat(Heartbeat):
    """The job's heartbeat also samples its devices for the hardware panel."""

    def extra_fields(self):
        # The GPUs this worker was given (CUDA_VISIBLE_DEVICES), numbered as NVML does.
        self.hardware = devices.sample(os.getpid())
        return {"hardware": self.hardware}

    def beaten(self):
        # The attempt's device time runs on to this beat (quotas.usage).
        quota_usage.beat(self.pk)
        broadcast(f"experiment-{self.pk}", {"type": "hardware", **self.hardware})


def _finish(experiment, status, error=""):
    experiment.finish(status, error)
