"""RQ entry points for datasets: take an id, re-read the row, call the cores (archives,
sources, imaging), write the result.  Safe to run twice: the row is claimed before any work.

Every path the row names is checked again here against the import roots and the dataset's
own upload folder: the job trusts nothing the form checked, since files change in between.
"""

import logging
import os
import shutil
import time

from rq import get_current_job

from datasets import archives, imaging, lists, rules, sources
from datasets.models import Dataset
from jobs.events import broadcast
from jobs.heartbeat import Heartbeat

log = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 0.5


def build(dataset_id):
    dataset = Dataset.objects.filter(pk=dataset_id).first()
    rq_job = get_current_job()
    if dataset is None or not dataset.claim(rq_job.id if rq_job else None):
        log.info("dataset %s: not queued (deleted or claimed by another run); nothing to do", dataset_id)
        return
    # An earlier attempt killed mid-build may have left its staging folders.
    dataset.remove_partial_files()
    with Heartbeat(dataset):
        _build(dataset)


def _build(dataset):
    build_log = BuildLog(dataset)
    try:
        if dataset.source_type == Dataset.SourceType.ARCHIVE:
            _extract(dataset, build_log)
        plan = plan_for(dataset)
        build_log.write(
            f"Found {len(plan.classes)} classes and {plan.total:,} images: "
            + ", ".join(f"{len(plan.splits[s]):,} {name.lower()}" for s, name in _SPLIT_WORDS if plan.splits[s])
            + "."
        )
        for note in plan.notes:
            build_log.write(note)
        if plan.skipped:
            build_log.write(
                f"{len(plan.skipped):,} files and list entries left out before decoding; see Failed entries."
            )
        workers = os.cpu_count() or 1
        build_log.write(
            f"Decoding and resizing to {dataset.width}×{dataset.height} {dataset.get_channels_display().lower()} "
            f"({dataset.get_resize_mode_display().lower()}) with {workers} processes, "
            f"stored as {dataset.get_encoding_display().lower()}."
        )
        started = time.monotonic()
        result = imaging.build_splits(
            plan.splits,
            dataset.directory,
            classes=plan.classes,
            width=dataset.width,
            height=dataset.height,
            channels=dataset.channels,
            resize_mode=dataset.resize_mode,
            encoding=dataset.encoding,
            shuffle=dataset.shuffle,
            seed=dataset.seed,
            relative_to=_display_root(dataset),
            progress=Progress(dataset, "Decoding"),
            workers=workers,
        )
    except imaging.ImagingError as exc:
        build_log.write(f"Failed: {exc}", level="error")
        dataset.finish(Dataset.Status.FAILED, str(exc))
        return
    except Exception as exc:
        log.exception("dataset %s: build crashed", dataset.pk)
        build_log.write(f"Failed with an internal error: {exc}", level="error")
        dataset.finish(Dataset.Status.FAILED, f"The build stopped with an internal error: {exc}")
        raise

    seconds = time.monotonic() - started
    if result.skipped:
        build_log.write(f"{len(result.skipped):,} files could not be read; see Failed entries.")
    build_log.write(
        f"Done: {result.total_images:,} images in {seconds:.1f} s ({result.total_images / max(seconds, 1e-9):,.0f} "
        f"images/s), {result.stored_bytes / 1e6:,.1f} MB stored."
    )
    Dataset.objects.filter(pk=dataset.pk, status=Dataset.Status.RUNNING).update(
        classes=result.classes,
        counts=result.counts,
        skipped=[list(item) for item in plan.skipped + result.skipped],
        stored_bytes=result.stored_bytes,
        progress_done=plan.total,
        progress_total=plan.total,
    )
    dataset.finish(Dataset.Status.DONE, message="Ready")


_SPLIT_WORDS = (("train", "Training"), ("val", "Validation"), ("test", "Test"))


def plan_for(dataset):
    """The classes and items of each split, from the row's source (lenient: bad list lines are skipped)."""
    options = {
        "val_percent": dataset.val_percent,
        "test_percent": dataset.test_percent,
        "seed": dataset.seed,
        "min_per_class": dataset.min_per_class,
        "max_per_class": dataset.max_per_class,
    }
    allowed = [dataset.upload_dir]
    if dataset.source_type == Dataset.SourceType.LISTS:
        labels_path = rules.resolve_import_path(dataset.labels_file, allowed=allowed)
        classes = lists.read_labels(rules.read_list_file(labels_path, "labels file"))
        parsed, names = {}, {}
        for split, value in (("train", dataset.train_list), ("val", dataset.val_list), ("test", dataset.test_list)):
            if value:
                path = rules.resolve_import_path(value, allowed=allowed)
                names[split] = f"{_SPLIT_WORDS_BY_KEY[split].lower()} list"
                parsed[split] = lists.parse_list(rules.read_list_file(path, names[split]), classes, names[split])
        prefix = rules.resolve_import_path(dataset.list_prefix) if dataset.list_prefix else None
        return sources.plan_lists(
            classes, parsed, list_names=names, prefix=prefix, roots=rules.import_roots(), strict=False, **options
        )
    if dataset.source_type == Dataset.SourceType.ARCHIVE:
        return sources.plan_folders(dataset.extracted_dir, **options)
    return sources.plan_folders(
        rules.resolve_import_path(dataset.source_folder),
        val_root=rules.resolve_import_path(dataset.val_folder) if dataset.val_folder else None,
        test_root=rules.resolve_import_path(dataset.test_folder) if dataset.test_folder else None,
        **options,
    )


_SPLIT_WORDS_BY_KEY = dict(_SPLIT_WORDS)


def _display_root(dataset):
    """Failed entries are shown relative to this folder."""
    if dataset.source_type == Dataset.SourceType.ARCHIVE:
        return dataset.extracted_dir
    if dataset.source_type == Dataset.SourceType.LISTS:
        return dataset.list_prefix or None
    folders = [f for f in (dataset.source_folder, dataset.val_folder, dataset.test_folder) if f]
    return os.path.commonpath(folders) if len(folders) > 1 else dataset.source_folder


def _extract(dataset, build_log):
    if dataset.extracted_dir.is_dir():  # a clone, given the images of the dataset it was cloned from
        build_log.write("Using the images extracted from the archive uploaded for the original dataset.")
        return
    archive = next(dataset.upload_dir.glob("archive.*"), None)
    if archive is None:
        raise imaging.ImagingError("The uploaded archive is missing; create the dataset again.")
    staging = dataset.upload_dir / ".images.partial"
    shutil.rmtree(staging, ignore_errors=True)
    build_log.write(f"Checking and extracting “{dataset.archive_name or archive.name}”.")
    try:
        inspection = archives.extract_archive(archive, staging, rules.archive_limits(), Progress(dataset, "Extracting"))
    except archives.ArchiveError:
        archive.unlink(missing_ok=True)  # an archive that breaks the rules is not kept
        raise
    staging.rename(dataset.extracted_dir)
    archive.unlink()  # the extracted images are what clones and previews use
    ignored = f" ({inspection.ignored:,} other files ignored)" if inspection.ignored else ""
    build_log.write(f"Extracted {len(inspection.members):,} images{ignored}.")


class Progress:
    """Progress of one phase: saved on the row and sent live, at most twice a second."""

    def __init__(self, dataset, phase):
        self.dataset = dataset
        self.phase = phase
        self.started = time.monotonic()
        self.last_sent = 0.0

    def __call__(self, done, total):
        now = time.monotonic()
        if now - self.last_sent < PROGRESS_EVERY_SECONDS and done < total:
            return
        self.last_sent = now
        Dataset.objects.filter(pk=self.dataset.pk).update(progress_done=done, progress_total=total)
        self.dataset.announce()
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        broadcast(
            self.dataset.group_name,
            {
                "type": "progress",
                "phase": self.phase,
                "done": done,
                "total": total,
                "images_per_second": round(rate, 1),
                "eta_seconds": round((total - done) / rate, 1) if rate > 0 else None,
            },
        )


class BuildLog:
    """The build's log: lines stamped with the time since the start, kept as log rows and sent live."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.started = time.monotonic()

    def write(self, message, level="info"):
        self.dataset.log(f"[{time.monotonic() - self.started:6.1f} s] {message}", level)
