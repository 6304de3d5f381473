from pathlib import Path

from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from accounts.access import OwnedQuerySet
from accounts.models import Visibility
from config.queues import enqueue_on_commit


class Dataset(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Building"
        DONE = "done", "Ready"
        FAILED = "failed", "Failed"

    class ImageType(models.IntegerChoices):
        GRAYSCALE = 1, "Grayscale"
        COLOR = 3, "Color"

    class ResizeMode(models.TextChoices):
        SQUASH = "squash", "Squash"
        CROP = "crop", "Crop"
        FILL = "fill", "Fill"
        HALF_CROP = "half_crop", "Half crop, half fill"

    name = models.CharField(max_length=200)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="datasets")
    team = models.ForeignKey("accounts.Team", models.SET_NULL, null=True, blank=True, related_name="datasets")
    visibility = models.CharField(max_length=20, choices=Visibility.choices, default=Visibility.PRIVATE)

    source_folder = models.CharField(max_length=1000)
    width = models.PositiveIntegerField(default=28)
    height = models.PositiveIntegerField(default=28)
    channels = models.PositiveSmallIntegerField(choices=ImageType.choices, default=ImageType.GRAYSCALE)
    resize_mode = models.CharField(max_length=20, choices=ResizeMode.choices, default=ResizeMode.SQUASH)
    val_percent = models.PositiveSmallIntegerField(default=25)
    seed = models.PositiveIntegerField(default=0)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    classes = models.JSONField(default=list, blank=True)
    # {"train": [count per class], "val": [...]}
    counts = models.JSONField(default=dict, blank=True)
    # [[relative path, reason], ...] of the files the build skipped.
    skipped = models.JSONField(default=list, blank=True)

    created = models.DateTimeField(default=timezone.now)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    objects = OwnedQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("dataset-detail", args=[self.pk])

    @property
    def directory(self):
        return Path(settings.DATA_ROOT) / "datasets" / str(self.pk)

    @property
    def group_name(self):
        return f"dataset-{self.pk}"

    @property
    def is_usable(self):
        return self.status == self.Status.DONE

    @property
    def is_finished(self):
        return self.status in (self.Status.DONE, self.Status.FAILED)

    @property
    def image_shape(self):
        return (self.height, self.width, self.channels)

    def split_total(self, split):
        return sum(self.counts.get(split, []))

    @property
    def train_count(self):
        return self.split_total("train")

    @property
    def val_count(self):
        return self.split_total("val")

    def class_rows(self):
        """Per class: name, counts per split and each count as a share of the largest
        class (the page draws those as bars)."""
        train = self.counts.get("train", [])
        val = self.counts.get("val", [])
        rows = [
            {"name": name, "train": train[i] if i < len(train) else 0, "val": val[i] if i < len(val) else 0}
            for i, name in enumerate(self.classes)
        ]
        largest = max((row["train"] + row["val"] for row in rows), default=0) or 1
        for row in rows:
            row["train_share"] = 100 * row["train"] / largest
            row["val_share"] = 100 * row["val"] / largest
        return rows

    def enqueue_build(self):
        enqueue_on_commit("datasets", "datasets.jobs.build", self.pk, on_failure="datasets.jobs.on_failure")

    # --- Job state changes: each claims the row with a filtered update. -------------------
    def claim(self):
        """Queued → running. False when another run got there first."""
        claimed = Dataset.objects.filter(pk=self.pk, status=self.Status.QUEUED).update(
            status=self.Status.RUNNING, started=timezone.now(), error=""
        )
        return claimed == 1

    def mark_failed(self, reason):
        Dataset.objects.filter(pk=self.pk).exclude(status=self.Status.DONE).update(
            status=self.Status.FAILED, error=reason, finished=timezone.now()
        )
