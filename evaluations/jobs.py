"""The RQ entry point of an evaluation: take an id, re-read the row, plan the images, run
the snapshot over them (evaluations.core), write the rows and the metrics.

The order matters: the decoding processes are started before JAX is imported and before
the heartbeat's thread, so they fork in milliseconds instead of being spawned. Every path
is checked again here against the import roots and the evaluation's own folder: the job
trusts nothing the form checked.
"""

import logging
import os
import shutil
import time
from collections import Counter
from contextlib import ExitStack

import numpy as np
from django.conf import settings
from rq import get_current_job

from datasets import archives, imaging, lists, rules
from evaluations import core
from evaluations.models import Evaluation
from jobs.events import broadcast
from jobs.heartbeat import Heartbeat
from training import inference

log = logging.getLogger(__name__)

PROGRESS_EVERY_SECONDS = 0.5
WHAT = {"split": "The split", "folder": "The folder", "list": "The list", "archive": "The archive"}


class EvaluationError(imaging.ImagingError):
    """What stops an evaluation, in the words of the person who asked for it."""


def evaluate(evaluation_id):
    evaluation = Evaluation.objects.select_related("experiment__dataset", "snapshot").filter(pk=evaluation_id).first()
    rq_job = get_current_job()
    if evaluation is None or not evaluation.claim(rq_job.id if rq_job else None):
        log.info("evaluation %s: not queued (deleted or claimed by another run); nothing to do", evaluation_id)
        return
    try:
        _evaluate(evaluation)
    finally:
        record_size(evaluation)


def record_size(evaluation):
    """What the evaluation's folder holds now, saved on its row for the storage quota."""
    folder = evaluation.directory
    size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) if folder.exists() else 0
    Evaluation.objects.filter(pk=evaluation.pk).update(size_bytes=size)


def _evaluate(evaluation):
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            rows, names, skipped = _run(evaluation, stack)
    except imaging.ImagingError as exc:
        evaluation.finish(Evaluation.Status.FAILED, str(exc))
        return
    except Exception as exc:
        log.exception("evaluation %s crashed", evaluation.pk)
        evaluation.finish(Evaluation.Status.FAILED, f"The evaluation stopped with an internal error: {exc}")
        raise

    classes = evaluation.experiment.dataset.classes
    results = core.metrics(rows, classes)
    given = [name for name in names["given"] if name] if names else []
    results["unknown_labels"] = dict(sorted(Counter(given).items()))
    results["unlabelled"] = int((rows.labels < 0).sum()) - len(given)
    seconds = time.monotonic() - started
    Evaluation.objects.filter(pk=evaluation.pk, status=Evaluation.Status.RUNNING).update(
        results=results, skipped=[list(entry) for entry in skipped], progress_done=evaluation.progress_total
    )
    accuracy = (
        "" if results["top1"] is None else f": top-1 {100 * results['top1']:.1f}%, top-5 {100 * results['top5']:.1f}%"
    )
    evaluation.log(
        f"Classified {len(rows):,} images in {seconds:.1f} s ({len(rows) / max(seconds, 1e-9):,.0f}/s){accuracy}."
    )
    evaluation.finish(Evaluation.Status.DONE, message="Done")


def _run(evaluation, stack):
    snapshot = evaluation.snapshot
    if snapshot is None or not os.path.exists(snapshot.path):
        raise EvaluationError(
            f"The snapshot of epoch {evaluation.snapshot_label} was deleted before the evaluation could use it; "
            "evaluate again with another snapshot."
        )
    dataset = evaluation.experiment.dataset
    folder = evaluation.directory
    progress = Progress(evaluation)

    if evaluation.source == Evaluation.Source.SPLIT:
        images, labels = _split_arrays(dataset, evaluation.split)
        _check_count(len(images), WHAT[evaluation.source])
        evaluation.log(
            f"Classifying {len(images):,} stored images with the snapshot of epoch {evaluation.snapshot_label}."
        )
        stack.enter_context(Heartbeat(evaluation))
        predict = _predictor(snapshot)
        rows = core.classify_arrays(images, labels, predict, progress)
        names, skipped = None, []
    else:
        plan, shown = _plan(evaluation, dataset.classes)
        if not plan.items:
            raise EvaluationError(_nothing_found(evaluation, plan))
        _check_count(len(plan.items), WHAT[evaluation.source])
        pool = stack.enter_context(imaging.DecodePool(**inference.image_options(dataset)))
        evaluation.log(
            f"Classifying {len(plan.items):,} images with the snapshot of epoch {evaluation.snapshot_label}, "
            f"decoded by {pool.workers} processes ({pool.start_method})."
        )
        if plan.skipped:
            evaluation.log(f"{len(plan.skipped):,} entries left out before decoding; see Skipped.")
        stack.enter_context(Heartbeat(evaluation))
        predict = _predictor(snapshot)
        rows, kept, failed = core.classify_files(plan.items, pool.batches, predict, progress)
        skipped = [(shown(path), why) for path, why in plan.skipped + failed]
        if not len(rows):
            path, why = skipped[0]
            raise EvaluationError(f"None of the {len(plan.items):,} images could be read (the first: {path}: {why}).")
        folder.mkdir(parents=True, exist_ok=True)
        core.write_names(evaluation.names_path, kept, shown)
        names = core.read_names(evaluation.names_path)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / ".rows.partial.npz"
    rows.save(partial)
    os.replace(partial, evaluation.rows_path)
    return rows, names, skipped


def _predictor(snapshot):
    from training import engine

    engine.enable_compilation_cache(settings.JAX_CACHE_DIR)
    try:
        model, mean, augmentation = inference.predictor(snapshot)
    except FileNotFoundError:
        raise EvaluationError(
            f"The snapshot of epoch {snapshot.epoch_label} was deleted before the evaluation could use it; "
            "evaluate again with another snapshot."
        ) from None
    return lambda images: engine.predict(model, images, mean, augmentation)


def _split_arrays(dataset, split):
    try:
        images = np.load(dataset.directory / f"{split}_images.npy", mmap_mode="r")
        labels = np.load(dataset.directory / f"{split}_labels.npy")
    except FileNotFoundError:
        raise EvaluationError(f"The files of dataset “{dataset.name}” are missing; build the dataset again.") from None
    return images, labels


def _check_count(count, what):
    core.check_count(count, what, settings.EVALUATION_MAX_IMAGES)


def _nothing_found(evaluation, plan):
    if evaluation.source == Evaluation.Source.LIST:
        return "The list names no image that can be used" + (
            f" ({len(plan.skipped):,} lines left out; the first: {plan.skipped[0][0]}: {plan.skipped[0][1]})."
            if plan.skipped
            else "."
        )
    return "No images were found in the class folders."


def _plan(evaluation, classes):
    """The images to classify and how to show a path (relative to what the person named)."""
    Source = Evaluation.Source
    if evaluation.source == Source.LIST:
        path = rules.resolve_import_path(evaluation.path, allowed=[evaluation.upload_dir])
        entries, problems = core.parse_list(rules.read_list_file(path, "list"), classes)
        _check_count(len(entries), "The list")
        uploaded = path.is_relative_to(evaluation.upload_dir.resolve())
        prefix = None if uploaded else path.parent
        plan = core.Plan(skipped=[(f"line {line}", why) for line, why in problems])
        written = {}
        for line, item in entries:
            real, why = lists.locate(item.path, prefix, rules.import_roots())
            if real is None:
                plan.skipped.append((f"line {line}: {item.path}", why))
                continue
            written[real] = item.path
            item.path = real
            plan.items.append(item)
        return plan, lambda real: written.get(real, real)

    if evaluation.source == Source.ARCHIVE:
        root = _extract(evaluation)
    else:
        root = rules.resolve_import_path(evaluation.path)
    junk = []
    names, found = imaging.scan_class_folders(root, junk)
    plan = core.Plan(core.labelled_items(((path, names[label]) for path, label in found), classes), junk)
    return plan, lambda path: os.path.relpath(path, root) if os.path.isabs(path) else path


def _extract(evaluation):
    images = evaluation.directory / "images"
    if images.is_dir():  # an earlier attempt extracted it
        return images
    archive = next(evaluation.upload_dir.glob("archive.*"), None)
    if archive is None:
        raise EvaluationError("The uploaded archive is missing; upload it again.")
    staging = evaluation.directory / ".images.partial"
    shutil.rmtree(staging, ignore_errors=True)
    evaluation.log(f"Checking and extracting “{evaluation.upload_name or archive.name}”.")
    inspection = archives.extract_archive(archive, staging, rules.archive_limits())
    staging.rename(images)
    archive.unlink()
    evaluation.log(f"Extracted {len(inspection.members):,} images.")
    return images


class Progress:
    """Saved on the row and sent live, at most twice a second."""

    def __init__(self, evaluation):
        self.evaluation = evaluation
        self.started = time.monotonic()
        self.last_sent = 0.0

    def __call__(self, done, total):
        now = time.monotonic()
        if now - self.last_sent < PROGRESS_EVERY_SECONDS and done < total:
            return
        self.last_sent = now
        evaluation = self.evaluation
        evaluation.progress_done, evaluation.progress_total = done, total
        Evaluation.objects.filter(pk=evaluation.pk).update(progress_done=done, progress_total=total)
        broadcast(evaluation.group_name, evaluation.progress_event(done / max(now - self.started, 1e-9)))
