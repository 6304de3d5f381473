from pathlib import Path

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import models, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from accounts.access import Owned, can_view, work_problem
from jobs.events import broadcast
from jobs.models import ACTIVE, Job, JobLogLine, JobStatus, remove_files_on_delete
from quotas import admission as quota_admission
from quotas import usage as quota_usage
from quotas.admission import Admission
from training import config


class Experiment(Owned, Job):
    Status = JobStatus

    ACTIVE = ACTIVE

    job_function = "training.jobs.train"
    default_queue = "training"
    group_prefix = "experiment"
    listed_on_console = True

    name = models.CharField(max_length=200)
    dataset = models.ForeignKey("datasets.Dataset", models.PROTECT, related_name="experiments")
    sweep = models.ForeignKey("Sweep", models.SET_NULL, null=True, blank=True, related_name="experiments")

    # A standard network's name (models.networks.NETWORKS, whose registry imports JAX, so
    # the column names no choices) or config.CUSTOM.
    network = models.CharField(max_length=30, default="lenet")
    # The spec of a custom network (YAML or JSON); empty for a standard one.
    network_spec = models.TextField(blank=True)
    # Start from these weights instead of random ones (fine-tuning).
    pretrained = models.ForeignKey(
        "Snapshot", models.SET_NULL, null=True, blank=True, related_name="fine_tuned", verbose_name="pretrained weights"
    )
    epochs = models.PositiveIntegerField(default=10)
    batch_size = models.PositiveIntegerField(default=64)
    learning_rate = models.FloatField(default=0.01)
    solver = models.CharField(max_length=10, choices=config.SOLVER_CHOICES, default="sgd")
    seed = models.PositiveIntegerField(default=0)
    # The rest of the engine's TrainConfig (solver parameters, learning-rate policy,
    # intervals, early stopping, augmentation), as the form cleaned it.
    options = models.JSONField(default=dict, blank=True)
    keep_snapshots = models.PositiveIntegerField(
        default=3, help_text="Keep the newest this many snapshots, and the best one. 0 keeps all."
    )
    # "training" is the shared queue (next free worker); a device queue pins one GPU.
    queue = models.CharField(max_length=200, default="training")

    abort_requested = models.BooleanField(default=False)
    device = models.CharField(max_length=200, blank=True)
    # Within the current epoch: {"epoch", "step", "steps", "images_per_second", "eta_seconds"}.
    progress = models.JSONField(default=dict, blank=True)
    # The latest sample of the devices the job runs on (training.devices.sample).
    hardware = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [
            # The console's "active" list: its few queued and running experiments, newest first.
            models.Index(fields=["status", "-created"]),
            # The console's lists and GET /api/experiments/: visible_to(user), newest first,
            # one page of ids (jobs.pagination.page_of). The index is walked in page order
            # and the walk stops at the page's end. (Indexes per branch of the visibility
            # rule made SQLite gather and sort every visible row instead: 10x slower.)
            models.Index(fields=["-created", "-id"], name="experiment_console_by_created"),
        ]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("experiment-detail", args=[self.pk])

    @property
    def directory(self):
        return Path(settings.DATA_ROOT) / "experiments" / str(self.pk)

    @property
    def network_title(self):
        return config.network_title(self.network)

    @property
    def is_custom(self):
        return self.network == config.CUSTOM

    @property
    def can_resume(self):
        return self.status in (self.Status.ABORTED, self.Status.FAILED) and self.snapshots.exists()

    # --- The job lifecycle (jobs.models.Job), as an experiment refines it -----------------
    def claim_filter(self):
        return {"abort_requested": False}

    def admission(self):
        # The team's quota: running experiments and device-hours (quotas.admission).
        return Admission(self)

    def may_start(self):
        return quota_admission.has_room(self)

    def finish_fields(self):
        return {"progress": {}}

    def requeue_fields(self):
        return {"abort_requested": False, "progress": {}}

    def resume_note(self):
        snapshot = self.snapshots.order_by("-epoch").first()
        return f"resuming from epoch {snapshot.epoch_label}" if snapshot else "starting again from the first epoch"

    def latest_message(self):
        change = self.status_changes.last()
        return change.message if change else ""

    def status_changed(self, message, level):
        StatusChange.objects.create(experiment=self, status=self.status, message=message)
        if level != "info" and message:
            self.log(message, level)
        # Device time is counted per attempt; an attempt that stopped frees its team's slot.
        if quota_usage.attempt_changed(self) and self.team_id is not None:
            quota_admission.wake(self.team_id)

    def request_abort(self):
        """A queued experiment is aborted at once; a running one stops after its current
        step and keeps a final snapshot."""
        if self._objects().filter(status=self.Status.QUEUED).update(abort_requested=True):
            self.finish(self.Status.ABORTED, message="Aborted before it started")
            return
        if self._objects().filter(status=self.Status.RUNNING, abort_requested=False).update(abort_requested=True):
            self.log("Abort requested")
        self.refresh_from_db()

    def resume(self):
        """Aborted or failed → queued again; the job continues from the last snapshot."""
        if not self.snapshots.exists():
            return False
        return self.requeue(
            f"Queued to {self.resume_note().replace('resuming', 'resume')}",
            statuses=(self.Status.ABORTED, self.Status.FAILED),
        )


class Sweep(Owned):
    """Experiments created together from one form with several learning rates and/or
    batch sizes, compared on one page."""

    name = models.CharField(max_length=200)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("sweep-detail", args=[self.pk])


class StatusChange(models.Model):
    experiment = models.ForeignKey(Experiment, models.CASCADE, related_name="status_changes")
    status = models.CharField(max_length=10, choices=Experiment.Status.choices)
    message = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["experiment", "created", "pk"]

    def __str__(self):
        return f"{self.experiment} {self.status}"


class LogLine(JobLogLine):
    experiment = models.ForeignKey(Experiment, models.CASCADE, related_name="log_lines")

    class Meta:
        ordering = ["experiment", "created", "pk"]


class EpochMetric(models.Model):
    """One row per epoch, plus a validation-only row (no train_loss) for each validation
    within an epoch when the validation interval is a fraction."""

    experiment = models.ForeignKey(Experiment, models.CASCADE, related_name="metrics")
    epoch = models.FloatField()
    train_loss = models.FloatField(null=True, blank=True)
    val_loss = models.FloatField(null=True, blank=True)
    val_accuracy = models.FloatField(null=True, blank=True)
    learning_rate = models.FloatField(null=True, blank=True)
    images_per_second = models.FloatField(default=0)
    seconds = models.FloatField(default=0)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["experiment", "epoch"]
        constraints = [models.UniqueConstraint(fields=["experiment", "epoch"], name="one_metric_row_per_epoch")]

    def __str__(self):
        return f"{self.experiment} epoch {self.epoch}"

    def as_event(self):
        """The same shape the page renders on load and receives over the WebSocket."""
        return {
            "type": "epoch",
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "val_accuracy": self.val_accuracy,
            "learning_rate": self.learning_rate,
            "images_per_second": self.images_per_second,
        }


class Snapshot(models.Model):
    """A checkpoint file: weights, optimizer state, epoch and RNG state, so a run can be
    resumed from it, fine-tuned from it or downloaded."""

    experiment = models.ForeignKey(Experiment, models.CASCADE, related_name="snapshots")
    # Fractional when snapshots are taken within an epoch, or on abort mid-epoch.
    epoch = models.FloatField()
    path = models.CharField(max_length=1000)
    size_bytes = models.PositiveBigIntegerField(default=0)
    val_loss = models.FloatField(null=True, blank=True)
    val_accuracy = models.FloatField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["experiment", "-epoch"]
        constraints = [models.UniqueConstraint(fields=["experiment", "epoch"], name="one_snapshot_per_epoch")]

    def __str__(self):
        return f"{self.experiment} snapshot {self.epoch_label}"

    @property
    def epoch_label(self):
        return f"{self.epoch:g}"


class ExportQuerySet(models.QuerySet):
    def visible_to(self, user):
        """An export is its experiment's snapshot in another form: as visible as the experiment."""
        return self.filter(experiment__in=Experiment.objects.visible_to(user))


class Export(Job):
    """A snapshot as a file other programs run (training.export_formats: ONNX or StableHLO),
    zipped with its labels and preprocessing, under `directory`."""

    job_function = "training.export_jobs.export"
    # It runs the network: a training worker, which owns the device.
    default_queue = "training"
    group_prefix = "export"

    experiment = models.ForeignKey(Experiment, models.CASCADE, related_name="exports")
    # A snapshot deleted meanwhile (the run's retention) leaves the epoch it was, for the
    # message of a job that can no longer start, and for a finished export's name.
    snapshot = models.ForeignKey(Snapshot, models.SET_NULL, null=True, blank=True, related_name="exports")
    snapshot_epoch = models.FloatField()
    format = models.CharField(max_length=10, choices=config.EXPORT_FORMAT_CHOICES)
    # Who asked for it; an account deleted later leaves the export.
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+")
    path = models.CharField(max_length=1000, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)

    objects = ExportQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self):
        return f"{self.experiment} epoch {self.snapshot_label} as {self.get_format_display()}"

    @property
    def directory(self):
        return Path(settings.DATA_ROOT) / "exports" / str(self.pk)

    @property
    def snapshot_label(self):
        return f"{self.snapshot_epoch:g}"

    @property
    def filename(self):
        return f"{slugify(self.experiment.name) or 'experiment'}-epoch-{self.snapshot_label}-{self.format}.zip"

    def get_download_url(self):
        return reverse("export-download", args=[self.experiment_id, self.pk])

    @staticmethod
    def refusal(user, experiment):
        """Why `user` may not export or download exports of `experiment`, or None. The file
        holds the dataset's labels and its mean image (a constant of the model), which a
        viewer who may not see the dataset is not given (as training.exports leaves them
        out of a snapshot's zip)."""
        if can_view(user, experiment.dataset):
            return None
        return "Exports hold the labels and the mean image of this experiment's dataset, which you may not see."

    @classmethod
    def request(cls, snapshot, fmt, user):
        """The export of `snapshot` as `fmt`: one that is under way or done already, else a
        new one, queued once committed. Pressing the button twice makes one job. A new one is
        its experiment's team's work, which a viewer of that team may not queue
        (PermissionDenied)."""
        existing = (
            cls.objects.filter(snapshot=snapshot, format=fmt)
            .filter(models.Q(status__in=ACTIVE) | models.Q(status=JobStatus.DONE))
            .first()
        )
        if existing is not None and (existing.is_active or Path(existing.path).is_file()):
            return existing, False
        problem = work_problem(user, snapshot.experiment.team_id)
        if problem:
            raise PermissionDenied(problem)
        with transaction.atomic():
            export = cls.objects.create(
                experiment=snapshot.experiment,
                snapshot=snapshot,
                snapshot_epoch=snapshot.epoch,
                format=fmt,
                requested_by=user,
            )
            export.submit(f"Queued: {export}")
        return export, True

    def latest_message(self):
        line = self.log_lines.last()
        return line.message if line else ""

    def experiment_event(self):
        """What the experiment page hears of it: which cell of its snapshot table changed."""
        return {
            "type": "export",
            "id": self.pk,
            "snapshot": self.snapshot_id,
            "format": self.format,
            "status": self.status,
        }

    def changed(self, message="", level="info"):
        super().changed(message, level)
        # The open experiment page shows each snapshot's exports, on its own socket.
        broadcast(f"{Experiment.group_prefix}-{self.experiment_id}", self.experiment_event())


class ExportLogLine(JobLogLine):
    export = models.ForeignKey(Export, models.CASCADE, related_name="log_lines")

    class Meta:
        ordering = ["export", "created", "pk"]


# Its files go with the row, also when its experiment is deleted (a cascade).
remove_files_on_delete(Export)
