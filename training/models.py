from pathlib import Path

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from accounts.access import Owned
from jobs.queues import enqueue_on_commit


class Experiment(Owned):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        ABORTED = "aborted", "Aborted"

    class Network(models.TextChoices):
        LENET = "lenet", "LeNet"
        ALEXNET = "alexnet", "AlexNet"
        GOOGLENET = "googlenet", "GoogLeNet"
        RESNET = "resnet", "ResNet"
        CUSTOM = "custom", "Custom network"

    class Solver(models.TextChoices):
        SGD = "sgd", "SGD with momentum"
        NESTEROV = "nesterov", "Nesterov's accelerated gradient"
        ADAGRAD = "adagrad", "AdaGrad"
        RMSPROP = "rmsprop", "RMSprop"
        ADADELTA = "adadelta", "AdaDelta"
        ADAM = "adam", "Adam"
        ADAMW = "adamw", "AdamW"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    name = models.CharField(max_length=200)
    dataset = models.ForeignKey("datasets.Dataset", models.PROTECT, related_name="experiments")
    sweep = models.ForeignKey("Sweep", models.SET_NULL, null=True, blank=True, related_name="experiments")

    network = models.CharField(max_length=30, choices=Network.choices, default=Network.LENET)
    # The spec of a custom network (YAML or JSON); empty for a standard one.
    network_spec = models.TextField(blank=True)
    # Start from these weights instead of random ones (fine-tuning).
    pretrained = models.ForeignKey(
        "Snapshot", models.SET_NULL, null=True, blank=True, related_name="fine_tuned", verbose_name="pretrained weights"
    )
    epochs = models.PositiveIntegerField(default=10)
    batch_size = models.PositiveIntegerField(default=64)
    learning_rate = models.FloatField(default=0.01)
    solver = models.CharField(max_length=10, choices=Solver.choices, default=Solver.SGD)
    seed = models.PositiveIntegerField(default=0)
    # The rest of the engine's TrainConfig (solver parameters, learning-rate policy,
    # intervals, early stopping, augmentation), as the form cleaned it.
    options = models.JSONField(default=dict, blank=True)
    keep_snapshots = models.PositiveIntegerField(
        default=3, help_text="Keep the newest this many snapshots, and the best one. 0 keeps all."
    )
    # "training" is the shared queue (next free worker); a device queue pins one GPU.
    queue = models.CharField(max_length=200, default="training")

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    abort_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    device = models.CharField(max_length=200, blank=True)
    # The job beats while it runs; a stale heartbeat means its worker died.
    heartbeat = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    rq_job_id = models.CharField(max_length=100, blank=True)
    # Within the current epoch: {"epoch", "step", "steps", "images_per_second", "eta_seconds"}.
    progress = models.JSONField(default=dict, blank=True)
    # The latest sample of the devices the job runs on (training.devices.sample).
    hardware = models.JSONField(default=dict, blank=True)

    created = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        # The console lists a user's experiments by status.
        indexes = [models.Index(fields=["status", "-created"])]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("experiment-detail", args=[self.pk])

    @property
    def directory(self):
        return Path(settings.DATA_ROOT) / "experiments" / str(self.pk)

    @property
    def group_name(self):
        return f"experiment-{self.pk}"

    @property
    def is_active(self):
        return self.status in self.ACTIVE

    @property
    def can_resume(self):
        return self.status in (self.Status.ABORTED, self.Status.FAILED) and self.snapshots.exists()

    # --- Job state changes: each claims the row with a filtered update, so two workers
    # (or a worker and a person pressing Abort) can never both win. ------------------------
    def enqueue_training(self):
        self.rq_job_id = f"experiment-{self.pk}-attempt-{self.attempts + 1}"
        Experiment.objects.filter(pk=self.pk).update(rq_job_id=self.rq_job_id)
        enqueue_on_commit(
            self.queue, "training.jobs.train", self.pk, job_id=self.rq_job_id, on_failure="training.jobs.on_failure"
        )

    def claim(self):
        """Queued → running. False when another run got there first, or it was aborted."""
        now = timezone.now()
        claimed = Experiment.objects.filter(pk=self.pk, status=self.Status.QUEUED, abort_requested=False).update(
            status=self.Status.RUNNING, started=now, heartbeat=now, error="", attempts=models.F("attempts") + 1
        )
        if claimed:
            self.refresh_from_db()
            self.log_status("Running on a worker" + (f" (attempt {self.attempts})" if self.attempts > 1 else ""))
        return claimed == 1

    def finish(self, status, error=""):
        if Experiment.objects.filter(pk=self.pk, status__in=self.ACTIVE).update(
            status=status, error=error, finished=timezone.now(), progress={}
        ):
            self.refresh_from_db()
            self.log_status(error)
        else:
            self.refresh_from_db()

    def request_abort(self):
        """A queued experiment is aborted at once; a running one stops after its current
        step and keeps a final snapshot."""
        now = timezone.now()
        if Experiment.objects.filter(pk=self.pk, status=self.Status.QUEUED).update(
            status=self.Status.ABORTED, abort_requested=True, finished=now
        ):
            self.refresh_from_db()
            self.log_status("Aborted before it started")
            return
        if Experiment.objects.filter(pk=self.pk, status=self.Status.RUNNING, abort_requested=False).update(
            abort_requested=True
        ):
            self.log_event("Abort requested")
        self.refresh_from_db()

    def resume(self):
        """Aborted or failed → queued again; the job continues from the last snapshot."""
        if not self.snapshots.exists():
            return False
        resumed = Experiment.objects.filter(pk=self.pk, status__in=[self.Status.ABORTED, self.Status.FAILED]).update(
            status=self.Status.QUEUED, abort_requested=False, error="", finished=None
        )
        self.refresh_from_db()
        if resumed:
            self.log_status("Queued to resume from the last snapshot")
            self.enqueue_training()
        return resumed == 1

    def interrupted(self, reason, max_attempts):
        """The job died without finishing (its worker was killed, the machine rebooted):
        queue it again to resume from its last snapshot, up to max_attempts runs."""
        if self.attempts < max_attempts:
            if Experiment.objects.filter(pk=self.pk, status=self.Status.RUNNING).update(
                status=self.Status.QUEUED, abort_requested=False, progress={}
            ):
                self.refresh_from_db()
                self.log_status(
                    f"{reason}; resuming from the last snapshot (attempt {self.attempts + 1} of {max_attempts})"
                )
                self.enqueue_training()
                return True
        self.finish(self.Status.FAILED, f"{reason}, {self.attempts} times; not retrying again.")
        return False

    def log_status(self, message=""):
        StatusChange.objects.create(experiment=self, status=self.status, message=message)

    def log_event(self, message, level="info"):
        LogLine.objects.create(experiment=self, level=level, message=message)


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


class LogLine(models.Model):
    experiment = models.ForeignKey(Experiment, models.CASCADE, related_name="log_lines")
    level = models.CharField(max_length=10, default="info")
    message = models.TextField()
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["experiment", "created", "pk"]

    def __str__(self):
        return self.message[:80]

    def as_event(self):
        return {"type": "log", "level": self.level, "message": self.message, "time": self.created.isoformat()}


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
