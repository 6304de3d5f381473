import shutil
from pathlib import Path

from django.conf import settings
from django.db import models
from django.urls import reverse

from accounts.access import Owned, OwnedQuerySet
from jobs.models import Job, JobLogLine, JobStatus

SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "Training", "val": "Validation", "test": "Test"}


class DatasetQuerySet(OwnedQuerySet):
    def trainable(self):
        """Built datasets training can read: raw pixels (PNG/JPEG-stored ones would need decoding)."""
        return self.filter(status=Dataset.Status.DONE, encoding=Dataset.Encoding.RAW)


class Dataset(Owned, Job):
    class Status(models.TextChoices):
        # The values of jobs.models.JobStatus, in a dataset's words.
        QUEUED = JobStatus.QUEUED, "Queued"
        RUNNING = JobStatus.RUNNING, "Building"
        DONE = JobStatus.DONE, "Ready"
        FAILED = JobStatus.FAILED, "Failed"
        ABORTED = JobStatus.ABORTED, "Aborted"

    job_function = "datasets.jobs.build"
    default_queue = "datasets"
    group_prefix = "dataset"
    listed_on_console = True

    class ImageType(models.IntegerChoices):
        GRAYSCALE = 1, "Grayscale"
        COLOR = 3, "Color"

    class ResizeMode(models.TextChoices):
        SQUASH = "squash", "Squash"
        CROP = "crop", "Crop"
        FILL = "fill", "Fill"
        HALF_CROP = "half_crop", "Half crop, half fill"

    class SourceType(models.TextChoices):
        FOLDER = "folder", "Folder on the server"
        ARCHIVE = "archive", "Upload an archive"
        LISTS = "lists", "Text-file lists"

    class Encoding(models.TextChoices):
        RAW = "raw", "Raw pixels"
        PNG = "png", "PNG"
        JPEG = "jpeg", "JPEG"

    name = models.CharField(max_length=200)

    # Where the images come from.  Paths are real server paths: under an import root when a user
    # named them, under upload_dir when they were uploaded.
    source_type = models.CharField(max_length=10, choices=SourceType.choices, default=SourceType.FOLDER)
    source_folder = models.CharField(max_length=1000, blank=True)  # training class folders
    val_folder = models.CharField(max_length=1000, blank=True)
    test_folder = models.CharField(max_length=1000, blank=True)
    labels_file = models.CharField(max_length=1000, blank=True)
    train_list = models.CharField(max_length=1000, blank=True)
    val_list = models.CharField(max_length=1000, blank=True)
    test_list = models.CharField(max_length=1000, blank=True)
    list_prefix = models.CharField(max_length=1000, blank=True)
    archive_name = models.CharField(max_length=255, blank=True)  # shown to people only, never a path
    cloned_from = models.ForeignKey("self", models.SET_NULL, null=True, blank=True, related_name="clones")

    width = models.PositiveIntegerField(default=28)
    height = models.PositiveIntegerField(default=28)
    channels = models.PositiveSmallIntegerField(choices=ImageType.choices, default=ImageType.GRAYSCALE)
    resize_mode = models.CharField(max_length=20, choices=ResizeMode.choices, default=ResizeMode.SQUASH)
    val_percent = models.PositiveSmallIntegerField(default=25)
    test_percent = models.PositiveSmallIntegerField(default=0)
    seed = models.PositiveIntegerField(default=0)
    min_per_class = models.PositiveIntegerField(default=1)
    max_per_class = models.PositiveIntegerField(null=True, blank=True)
    shuffle = models.BooleanField(default=True)
    encoding = models.CharField(max_length=10, choices=Encoding.choices, default=Encoding.RAW)

    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    classes = models.JSONField(default=list, blank=True)
    # {"train": [count per class], "val": [...], "test": [...]}
    counts = models.JSONField(default=dict, blank=True)
    # [[file, reason], ...] of what the build left out.
    skipped = models.JSONField(default=list, blank=True)
    stored_bytes = models.BigIntegerField(default=0)

    objects = DatasetQuerySet.as_manager()

    class Meta:
        ordering = ["-created"]
        indexes = [
            # The console's dataset list, GET /api/datasets/ and the datasets page:
            # visible_to(user), newest first, one page, walked in page order.
            models.Index(fields=["-created", "-id"], name="dataset_console_by_created"),
        ]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("dataset-detail", args=[self.pk])

    @property
    def directory(self):
        return Path(settings.DATA_ROOT) / "datasets" / str(self.pk)

    @property
    def upload_dir(self):
        """Uploaded archives, lists and extracted images: named by the dataset, never by the user."""
        return Path(settings.DATA_ROOT) / "uploads" / str(self.pk)

    @property
    def is_usable(self):
        return self.status == self.Status.DONE

    @property
    def is_trainable(self):
        return self.is_usable and self.encoding == self.Encoding.RAW

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

    @property
    def test_count(self):
        return self.split_total("test")

    @property
    def image_count(self):
        return sum(self.split_total(split) for split in SPLITS)

    def split_rows(self):
        """(split, name, count) of the splits that hold images."""
        return [(split, SPLIT_NAMES[split], self.split_total(split)) for split in SPLITS if self.split_total(split)]

    def class_rows(self):
        """Per class: name, counts per split and each count as a share of the largest
        class (the page draws those as bars)."""
        rows = []
        for i, name in enumerate(self.classes):
            row = {"name": name, "index": i}
            for split in SPLITS:
                counts = self.counts.get(split, [])
                row[split] = counts[i] if i < len(counts) else 0
            rows.append(row)
        largest = max((sum(row[split] for split in SPLITS) for row in rows), default=0) or 1
        for row in rows:
            for split in SPLITS:
                row[f"{split}_share"] = 100 * row[split] / largest
        return rows

    def distribution(self):
        """Images per class of each split, for the page's charts."""
        return {
            "classes": self.classes,
            "splits": [
                {"split": split, "name": SPLIT_NAMES[split], "counts": self.counts.get(split, [])}
                for split in SPLITS
                if self.split_total(split)
            ],
        }

    @property
    def source_is_uploaded(self):
        return self.source_type == self.SourceType.ARCHIVE or any(
            self.is_upload(path) for path in (self.labels_file, self.train_list, self.val_list, self.test_list)
        )

    def is_upload(self, path):
        return bool(path) and Path(path).is_relative_to(self.upload_dir)

    @property
    def extracted_dir(self):
        """Where an uploaded archive's class folders are extracted to."""
        return self.upload_dir / "images"

    def delete_with_files(self):
        """Delete the row, then its files: a refused delete (experiments use it) keeps both."""
        folders = [self.directory, self.upload_dir, *self.directory.parent.glob(f".{self.pk}.partial-*")]
        self.delete()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)

    # --- The job lifecycle (jobs.models.Job), as a build refines it ------------------------
    def finish(self, status, error="", message=None):
        """A build that did not finish leaves nothing behind that looks usable; uploaded
        images stay, for a clone or a retry to use."""
        finished = super().finish(status, error, message)
        if finished and status != self.Status.DONE:
            self.remove_partial_files()
        return finished

    def remove_partial_files(self):
        shutil.rmtree(self.directory, ignore_errors=True)
        for leftover in self.directory.parent.glob(f".{self.pk}.partial-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.rmtree(self.upload_dir / ".images.partial", ignore_errors=True)

    def resume_note(self):
        return "building again from the start"


class BuildLogLine(JobLogLine):
    dataset = models.ForeignKey(Dataset, models.CASCADE, related_name="log_lines")

    class Meta:
        ordering = ["dataset", "created", "pk"]
