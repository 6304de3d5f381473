"""RQ entry points for datasets: take an id, re-read the row, call the imaging core,
write the result. Safe to run twice: the row is claimed before any work."""

import logging
import shutil
import time

from django.utils import timezone

from config.events import broadcast
from datasets import imaging
from datasets.models import Dataset

log = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 0.5


def build(dataset_id):
    dataset = Dataset.objects.filter(pk=dataset_id).first()
    if dataset is None or not dataset.claim():
        log.info("dataset %s: not queued (deleted or claimed by another run); nothing to do", dataset_id)
        return
    broadcast(dataset.group_name, {"type": "status", "status": Dataset.Status.RUNNING, "error": ""})

    started = time.monotonic()
    last_sent = 0.0

    def progress(done, total):
        nonlocal last_sent
        now = time.monotonic()
        if now - last_sent < PROGRESS_EVERY_SECONDS and done < total:
            return
        last_sent = now
        Dataset.objects.filter(pk=dataset_id).update(progress_done=done, progress_total=total)
        elapsed = now - started
        rate = done / elapsed if elapsed > 0 else 0.0
        broadcast(
            dataset.group_name,
            {
                "type": "progress",
                "done": done,
                "total": total,
                "images_per_second": round(rate, 1),
                "eta_seconds": round((total - done) / rate, 1) if rate > 0 else None,
            },
        )

    try:
        result = imaging.build_dataset(
            dataset.source_folder,
            dataset.directory,
            width=dataset.width,
            height=dataset.height,
            channels=dataset.channels,
            resize_mode=dataset.resize_mode,
            val_percent=dataset.val_percent,
            seed=dataset.seed,
            progress=progress,
        )
    except imaging.ImagingError as exc:
        _fail(dataset, str(exc))
        return
    except Exception as exc:
        log.exception("dataset %s: build crashed", dataset_id)
        _fail(dataset, f"The build stopped with an internal error: {exc}")
        raise

    Dataset.objects.filter(pk=dataset_id, status=Dataset.Status.RUNNING).update(
        status=Dataset.Status.DONE,
        classes=result.classes,
        counts=result.counts,
        skipped=[list(item) for item in result.skipped],
        progress_done=result.total_images,
        progress_total=result.total_images,
        finished=timezone.now(),
    )
    broadcast(dataset.group_name, {"type": "status", "status": Dataset.Status.DONE, "error": ""})


def _fail(dataset, reason):
    dataset.mark_failed(reason)
    # The core builds into a temporary folder; this only guards against leftovers.
    shutil.rmtree(dataset.directory, ignore_errors=True)
    broadcast(dataset.group_name, {"type": "status", "status": Dataset.Status.FAILED, "error": reason})


def on_failure(job, connection, exc_type, exc_value, traceback):
    """RQ calls this when the job dies in a way the job itself could not catch (a timeout,
    a killed work-horse): the row must not stay "running"."""
    dataset_id = job.args[0]
    Dataset.objects.filter(pk=dataset_id, status__in=[Dataset.Status.QUEUED, Dataset.Status.RUNNING]).update(
        status=Dataset.Status.FAILED, error=f"The build job died: {exc_value or exc_type}", finished=timezone.now()
    )
