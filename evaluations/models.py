from pathlib import Path

from django.conf import settings
from django.db import models
from django.urls import reverse

from accounts.access import Owned, OwnedQuerySet
from evaluations import core
from jobs.models import Job, JobLogLine, remove_files_on_delete


class EvaluationQuerySet(OwnedQuerySet):
    def visible_to(self, user):
        """Never shared more widely than its experiment, even after the experiment was
        narrowed: both must be visible."""
        from training.models import Experiment

        return super().visible_to(user).filter(experiment__in=Experiment.objects.visible_to(user))


class Evaluation(Owned, Job):
    """A snapshot of an experiment run over many images (DIGITS' "classify many"): a stored
    split, a server folder or list, or an uploaded archive or list. Per-image rows are kept
    in files (core.Rows) under `directory`, the metrics on the row."""

    job_function = "evaluations.jobs.evaluate"
    # It runs the network: a training worker, which owns the device.
    default_queue = "training"
    group_prefix = "evaluation"

    class Source(models.TextChoices):
        SPLIT = "split", "A split of the dataset"
        FOLDER = "folder", "A folder on the server"
        LIST = "list", "A text list of images"
        ARCHIVE = "archive", "An uploaded archive"

    experiment = models.ForeignKey("training.Experiment", models.CASCADE, related_name="evaluations")
    # A snapshot deleted meanwhile (the run's retention, a deleted experiment) leaves the
    # epoch it was, for the message.
    snapshot = models.ForeignKey("training.Snapshot", models.SET_NULL, null=True, blank=True, related_name="+")
    snapshot_epoch = models.FloatField()

    source = models.CharField(max_length=10, choices=Source.choices)
    split = models.CharField(max_length=10, blank=True)  # "val" or "test"
    # A server folder or list (under an import root), or an uploaded list or archive
    # (under `upload_dir`): real paths, checked again by the job.
    path = models.CharField(max_length=1000, blank=True)
    upload_name = models.CharField(max_length=255, blank=True)  # shown to people only, never a path

    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    # core.metrics(), plus "unknown_labels" {label: count} and "unlabelled".
    results = models.JSONField(default=dict, blank=True)
    # What its folder (rows, an uploaded list or archive) takes on disk, recorded when the
    # job ends, for the team's storage quota (quotas.usage): no folder is walked on a page.
    size_bytes = models.PositiveBigIntegerField(default=0)
    # [[path, reason], ...] of what was not classified.
    skipped = models.JSONField(default=list, blank=True)

    objects = EvaluationQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return f"{self.experiment} on {self.source_text}"

    def get_absolute_url(self):
        return reverse("evaluation-detail", args=[self.pk])

    @property
    def directory(self):
        return Path(settings.DATA_ROOT) / "evaluations" / str(self.pk)

    @property
    def upload_dir(self):
        return self.directory / "upload"

    @property
    def rows_path(self):
        return self.directory / "rows.npz"

    @property
    def names_path(self):
        return self.directory / "names.json"

    @property
    def source_text(self):
        if self.source == self.Source.SPLIT:
            return {"val": "the validation images", "test": "the test images"}.get(self.split, self.split)
        if self.upload_name:
            return f"uploaded “{self.upload_name}”"
        return self.path

    @property
    def source_key(self):
        """What makes two evaluations' images the same: a split of the same dataset, the same
        server folder or list, an upload by its name (each upload has a path of its own)."""
        if self.source == self.Source.SPLIT:
            return (self.source, self.split, self.experiment.dataset_id)
        if self.upload_name:
            return (self.source, "upload", self.upload_name)
        return (self.source, self.path)

    @property
    def snapshot_label(self):
        return f"{self.snapshot_epoch:g}"

    @property
    def percent_done(self):
        return 100 * self.progress_done / self.progress_total if self.progress_total else 0

    def progress_event(self, images_per_second=0.0):
        """The one shape of progress, on the page, over the socket and on reconnection."""
        done, total = self.progress_done, self.progress_total
        return {
            "type": "progress",
            "done": done,
            "total": total,
            "images_per_second": round(images_per_second, 1),
            "eta_seconds": round((total - done) / images_per_second, 1) if images_per_second > 0 else None,
        }

    def rows(self):
        return core.Rows.load(self.rows_path)

    def names(self):
        """Per row: "paths" (the real file, None for a stored image), "names" (as shown) and
        "given" (the label its source gave, when the network does not know it)."""
        if self.source == self.Source.SPLIT:
            count = self.results.get("count", 0)
            return {
                "paths": [None] * count,
                "names": [f"{self.split}/{i}" for i in range(count)],
                "given": [""] * count,
            }
        return core.read_names(self.names_path)

    def resume_note(self):
        return "classifying again from the first image"


class EvaluationLogLine(JobLogLine):
    evaluation = models.ForeignKey(Evaluation, models.CASCADE, related_name="log_lines")

    class Meta:
        ordering = ["evaluation", "created", "pk"]


# Its files go with the row, also when its experiment is deleted (a cascade).
remove_files_on_delete(Evaluation)
