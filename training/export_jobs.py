"""The RQ entry point of an export: take an id, re-read the row, export the snapshot
(training.export_formats, which checks the file against the platform), write the zip.

JAX is imported inside the job, in the work-horse RQ forked, as training.jobs does.
"""

import logging
import os

import numpy as np
from django.conf import settings
from django.utils import timezone
from rq import get_current_job

from jobs.heartbeat import Heartbeat
from training import inference
from training.models import Export

log = logging.getLogger(__name__)

# Real images of the dataset the file is checked on, against the platform's prediction.
CHECK_IMAGES = 16
RESIZE_HELP = {
    "squash": "resized to exactly that size, ignoring the aspect ratio",
    "crop": "the aspect ratio kept, the image filling the size and the overflow cut off evenly",
    "fill": "the aspect ratio kept, the image fitting inside the size and the rest padded",
    "half_crop": "halfway between crop and fill: cut off a little and padded a little",
}


class ExportFailed(ValueError):
    """What stops an export, in the words of the person who asked for it."""


def export(export_id):
    row = Export.objects.select_related("experiment__dataset", "snapshot").filter(pk=export_id).first()
    rq_job = get_current_job()
    if row is None or not row.claim(rq_job.id if rq_job else None):
        log.info("export %s: not queued (deleted or claimed by another run); nothing to do", export_id)
        return
    from training import export_formats

    try:
        with Heartbeat(row):
            archive, checked = _archive(row)
    except (ExportFailed, export_formats.ExportError) as exc:
        row.finish(Export.Status.FAILED, str(exc))
        return
    except Exception as exc:
        log.exception("export %s crashed", row.pk)
        row.finish(Export.Status.FAILED, f"The export stopped with an internal error: {exc}")
        raise

    row.directory.mkdir(parents=True, exist_ok=True)
    path = row.directory / row.filename
    partial = path.with_suffix(".partial")
    partial.write_bytes(archive)
    # A download never sees half a file: the rename is atomic on one filesystem.
    os.replace(partial, path)
    Export.objects.filter(pk=row.pk).update(path=str(path), size_bytes=len(archive))
    size = f"{len(archive) / 1e6:.1f} MB zipped"
    row.finish(
        Export.Status.DONE,
        message=f"Exported as {row.get_format_display()} ({size}); it gives the platform's probabilities to "
        f"within {export_formats.TOLERANCE:g} on {checked} images of the dataset.",
    )


def _archive(row):
    """(the zip's bytes, how many images the file was checked on)."""
    from training import engine, export_formats

    snapshot, experiment = row.snapshot, row.experiment
    dataset = experiment.dataset
    gone = ExportFailed(
        f"The snapshot of epoch {row.snapshot_label} was deleted before it could be exported; export another snapshot."
    )
    if snapshot is None or not os.path.exists(snapshot.path):
        raise gone
    images = _check_images(dataset)
    row.log(f"Exporting the snapshot of epoch {row.snapshot_label} as {row.get_format_display()}.")
    engine.enable_compilation_cache(settings.JAX_CACHE_DIR)
    try:
        model, mean, augmentation = inference.predictor(snapshot)
    except FileNotFoundError:
        raise (gone if not os.path.exists(snapshot.path) else _dataset_missing(dataset)) from None
    classify = export_formats.classify_function(model, mean, augmentation)
    data = export_formats.export(row.format, classify, dataset.image_shape, images)
    preprocessing = {
        "width": dataset.width,
        "height": dataset.height,
        "channels": dataset.channels,
        "resize_mode": dataset.resize_mode,
        "resize_help": RESIZE_HELP.get(dataset.resize_mode, dataset.resize_mode),
        "inside": _inside(augmentation),
        "labels": list(dataset.classes),
    }
    info = {
        "experiment": experiment.name,
        "dataset": dataset.name,
        "network": experiment.network,
        "epoch": row.snapshot_epoch,
        "val_loss": snapshot.val_loss,
        "val_accuracy": snapshot.val_accuracy,
        "format": row.format,
        "tolerance": export_formats.TOLERANCE,
        "exported": timezone.now().isoformat(),
    }
    archive = export_formats.archive(row.format, data, labels=dataset.classes, preprocessing=preprocessing, info=info)
    return archive, len(images)


def _check_images(dataset):
    for split in ("val", "train"):
        try:
            images = np.load(dataset.directory / f"{split}_images.npy", mmap_mode="r")
        except FileNotFoundError:
            raise _dataset_missing(dataset) from None
        if len(images):
            return np.asarray(images[:CHECK_IMAGES])
    raise ExportFailed(f"Dataset “{dataset.name}” has no images to check the export on.")


def _dataset_missing(dataset):
    return ExportFailed(f"The files of dataset “{dataset.name}” are missing; build the dataset again.")


def _inside(augmentation):
    mean = {"image": "the dataset's mean image is subtracted", "pixel": "the dataset's mean pixel is subtracted"}
    steps = [mean.get(augmentation.use_mean, "no mean is subtracted"), "pixels are divided by 255"]
    if augmentation.crop_size is not None:
        steps.append(f"the centre {augmentation.crop_size}x{augmentation.crop_size} is cropped")
    return ", then ".join(steps)
