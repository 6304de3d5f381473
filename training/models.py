from pathlib import Path

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from accounts.access import OwnedQuerySet
from accounts.models import Visibility
from config.queues import enqueue_on_commit


class Experiment(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        ABORTED = "aborted", "Aborted"

    class Network(models.TextChoices):
        LENET = "lenet", "LeNet"

    class Solver(models.TextChoices):
        SGD = "sgd", "SGD with momentum"
        ADAM = "adam", "Adam"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    name = models.CharField(max_length=200)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="experiments")
    team = models.ForeignKey("accounts.Team", models.SET_NULL, null=True, blank=True, related_name="experiments")
    visibility = models.CharField(max_length=20, choices=Visibility.choices, default=Visibility.PRIVATE)
    dataset = models.ForeignKey("datasets.Dataset", models.PROTECT, related_name="experiments")

    network = models.CharField(max_length=30, choices=Network.choices, default=Network.LENET)
    epochs = models.PositiveIntegerField(default=10)
    batch_size = models.PositiveIntegerField(default=64)
    learning_rate = models.FloatField(default=0.01)
    solver = models.CharField(max_length=10, choices=Solver.choices, default=Solver.SGD)
    seed = models.PositiveIntegerField(default=0)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    abort_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    device = models.CharField(max_length=100, blank=True)

    created = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    objects = OwnedQuerySet.as_manager()

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

    def enqueue_training(self):
        enqueue_on_commit("training", "training.jobs.train", self.pk, on_failure="training.jobs.on_failure")

    # --- Job state changes: each claims the row with a filtered update. -------------------
    def claim(self):
        """Queued → running. False when another run got there first, or it was aborted."""
        claimed = Experiment.objects.filter(pk=self.pk, status=self.Status.QUEUED, abort_requested=False).update(
            status=self.Status.RUNNING, started=timezone.now(), error=""
        )
        return claimed == 1

    def finish(self, status, error=""):
        Experiment.objects.filter(pk=self.pk, status__in=self.ACTIVE).update(
            status=status, error=error, finished=timezone.now()
        )
        self.refresh_from_db()

    def request_abort(self):
        """A queued experiment is aborted at once; a running one stops after its current step."""
        now = timezone.now()
        if Experiment.objects.filter(pk=self.pk, status=self.Status.QUEUED).update(
            status=self.Status.ABORTED, abort_requested=True, finished=now
        ):
            self.refresh_from_db()
            return
        Experiment.objects.filter(pk=self.pk, status=self.Status.RUNNING).update(abort_requested=True)
        self.refresh_from_db()


class EpochMetric(models.Model):
    experiment = models.ForeignKey(Experiment, models.CASCADE, related_name="metrics")
    epoch = models.PositiveIntegerField()
    train_loss = models.FloatField()
    val_loss = models.FloatField(null=True, blank=True)
    val_accuracy = models.FloatField(null=True, blank=True)
    learning_rate = models.FloatField()
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
    experiment = models.ForeignKey(Experiment, models.CASCADE, related_name="snapshots")
    epoch = models.PositiveIntegerField()
    path = models.CharField(max_length=1000)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["experiment", "-epoch"]
        constraints = [models.UniqueConstraint(fields=["experiment", "epoch"], name="one_snapshot_per_epoch")]

    def __str__(self):
        return f"{self.experiment} snapshot {self.epoch}"
