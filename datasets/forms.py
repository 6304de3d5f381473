import contextlib
import shutil
from pathlib import Path

from django import forms
from django.conf import settings
from django.core.files.move import file_move_safe
from django.db import transaction

from accounts.forms import SETTINGS_FIELDS, OwnedObjectForm, OwnedSettingsForm
from datasets import archives, imaging, lists, rules, sources
from datasets.models import Dataset
from quotas import usage as quota_usage

MAX_SIDE = 1024


def candidate_folders():
    """Folders under the import roots that look like a dataset's (their subfolders are
    classes of images), offered as suggestions in the form."""
    return sources.dataset_folders(settings.DATA_IMPORT_ROOTS)


# The list files of a "lists" source: the model field holding a server path, the upload field
# that may replace it, and the name it is stored under in the dataset's upload folder.
LIST_FIELDS = [
    ("labels_file", "labels_upload", "labels.txt"),
    ("train_list", "train_list_upload", "train.txt"),
    ("val_list", "val_list_upload", "val.txt"),
    ("test_list", "test_list_upload", "test.txt"),
]
# The model fields each kind of source reads.  A clean form empties the others (typed, then
# another source chosen), so that the row names only what the dataset was built from.
SOURCE_FIELDS = {
    Dataset.SourceType.FOLDER: {"source_folder", "val_folder", "test_folder"},
    Dataset.SourceType.ARCHIVE: set(),
    Dataset.SourceType.LISTS: {"labels_file", "train_list", "val_list", "test_list", "list_prefix"},
}
ALL_SOURCE_FIELDS = set().union(*SOURCE_FIELDS.values())
LIST_WORDS = {"labels_file": "labels file", "train_list": "training list", "val_list": "validation list",
              "test_list": "test list"}  # fmt: skip


class DatasetForm(OwnedObjectForm):
    """Every way to make a dataset.  Whatever can be known before the job is checked here, on the
    field that caused it: paths outside the import roots, unreadable lists and their bad lines,
    archives that break the rules, classes too small for the splits asked for."""

    archive = forms.FileField(
        required=False,
        label="Archive",
        help_text=".zip or .tar.gz with one folder per class (cats/1.jpg, dogs/2.png…), "
        "optionally inside one enclosing folder.",
    )
    labels_upload = forms.FileField(required=False, label="…or upload it")
    train_list_upload = forms.FileField(required=False, label="…or upload it")
    val_list_upload = forms.FileField(required=False, label="…or upload it")
    test_list_upload = forms.FileField(required=False, label="…or upload it")
    clone_of = forms.IntegerField(required=False, widget=forms.HiddenInput)

    class Meta:
        model = Dataset
        fields = [
            "name", "source_type", "source_folder", "val_folder", "test_folder", "labels_file", "train_list",
            "val_list", "test_list", "list_prefix", "channels", "width", "height", "resize_mode", "val_percent",
            "test_percent", "seed", "min_per_class", "max_per_class", "shuffle", "encoding", "visibility", "team",
        ]  # fmt: skip
        labels = {
            "source_type": "Images from",
            "source_folder": "Training images",
            "val_folder": "Validation images (optional)",
            "test_folder": "Test images (optional)",
            "labels_file": "Labels file",
            "train_list": "Training list",
            "val_list": "Validation list (optional)",
            "test_list": "Test list (optional)",
            "list_prefix": "Image folder (optional)",
            "channels": "Image type",
            "val_percent": "% for validation",
            "test_percent": "% for testing",
            "min_per_class": "Minimum images per class",
            "max_per_class": "Maximum images per class",
            "shuffle": "Shuffle the stored order",
            "encoding": "Store images as",
        }
        help_texts = {
            "source_folder": "A folder with one subfolder per class, e.g. mnist/train (relative to an import folder).",
            "val_folder": "Class subfolders with the same names; when given, no images are carved from training.",
            "test_folder": "Class subfolders with the same names; when given, no images are carved from training.",
            "labels_file": "A server path to a text file with one class name per line.",
            "train_list": "A server path to a text file with one “path label” per line; label is the class's "
            "line number in the labels file (from 0) or its name.",
            "list_prefix": "Relative paths in the lists are taken from this folder; without it, from the import "
            "folders.",
            "val_percent": "Carved from each class of the training images, seeded and reproducible.",
            "test_percent": "Carved the same way, after validation.",
            "seed": "The same seed gives the same split and order.",
            "min_per_class": "Classes with fewer training images are left out.",
            "max_per_class": "Larger classes keep a random (seeded) selection. Leave empty for no maximum.",
            "shuffle": "Training draws random batches either way; shuffling also mixes the classes in the gallery.",
            "encoding": "Raw pixels are what training memory-maps and reads fastest (no decoding). PNG and JPEG "
            "take less disk but cannot be trained on yet: clone the dataset as raw to train.",
        }
        widgets = {"max_per_class": forms.NumberInput(attrs={"placeholder": "no maximum"})}

    def __init__(self, *args, clone_source=None, **kwargs):
        self.clone_source = clone_source  # before the visibility choices are offered
        super().__init__(*args, **kwargs)
        # Fields a script (or an older form) may leave out fall back to the model's defaults.
        for name in ("source_type", "channels", "resize_mode", "val_percent", "test_percent", "seed",
                     "min_per_class", "encoding", "visibility"):  # fmt: skip
            self.fields[name].required = False
        self.fields["source_type"].widget = forms.RadioSelect(choices=Dataset.SourceType.choices)
        self.fields["resize_mode"].choices = [(Dataset.ResizeMode.SQUASH, "Squash")] + [
            choice for choice in Dataset.ResizeMode.choices if choice[0] != Dataset.ResizeMode.SQUASH
        ]
        self.fields["encoding"].choices = [
            ("raw", "Raw pixels — fastest to train on (default)"),
            ("png", "PNG — lossless, smaller; not trainable yet"),
            ("jpeg", "JPEG — lossy, smallest; not trainable yet"),
        ]
        for side in ("width", "height"):
            self.fields[side].widget.attrs.update(min=1, max=MAX_SIDE)
        for percent in ("val_percent", "test_percent"):
            self.fields[percent].widget.attrs.update(min=0, max=90)
        self.fields["min_per_class"].widget.attrs.update(min=1)
        self.fields["max_per_class"].widget.attrs.update(min=1)
        self.fields["archive"].widget.attrs.update(accept=".zip,.tar.gz,.tgz,.tar,.tar.bz2,.tar.xz")
        if clone_source is not None:
            self.fields["clone_of"].initial = clone_source.pk
            self.fields[
                "archive"
            ].help_text = (
                f"Leave empty to use the images uploaded for “{clone_source.name}”, or upload another archive."
            )
        self.inspection = None  # of the uploaded archive, once checked

    def sharing_sources(self):
        return [(self.clone_source, "a clone of it")]

    # --- One field at a time ----------------------------------------------------------------
    def _default(self, name):
        value = self.cleaned_data.get(name)
        return Dataset._meta.get_field(name).default if value in (None, "") else value

    def clean_source_type(self):
        return self._default("source_type")

    def clean_channels(self):
        return self._default("channels")

    def clean_resize_mode(self):
        return self._default("resize_mode")

    def clean_encoding(self):
        return self._default("encoding")

    def clean_seed(self):
        return self._default("seed")

    def clean_visibility(self):
        return self._default("visibility")

    def _clean_side(self, field):
        value = self.cleaned_data[field]
        if value is None or not 1 <= value <= MAX_SIDE:
            raise forms.ValidationError(f"Must be between 1 and {MAX_SIDE} pixels.")
        return value

    def clean_width(self):
        return self._clean_side("width")

    def clean_height(self):
        return self._clean_side("height")

    def _clean_percent(self, field):
        value = self._default(field)
        if not 0 <= value <= 90:
            raise forms.ValidationError("Must be between 0 and 90 percent.")
        return value

    def clean_val_percent(self):
        return self._clean_percent("val_percent")

    def clean_test_percent(self):
        return self._clean_percent("test_percent")

    def clean_min_per_class(self):
        value = self._default("min_per_class")
        if value < 1:
            raise forms.ValidationError("Must be at least 1.")
        return value

    def clean_max_per_class(self):
        value = self.cleaned_data.get("max_per_class")
        if value is not None and value < 1:
            raise forms.ValidationError("Must be at least 1, or empty for no maximum.")
        return value

    def clean_clone_of(self):
        pk = self.cleaned_data.get("clone_of")
        if pk is None:
            return None
        source = Dataset.objects.visible_to(self.user).filter(pk=pk).first()
        if source is None:
            raise forms.ValidationError("The dataset to clone does not exist.")
        self.clone_source = source
        return source

    # --- The source as a whole ------------------------------------------------------------------
    def clean(self):
        cleaned = super().clean()
        val_percent, test_percent = cleaned.get("val_percent"), cleaned.get("test_percent")
        if val_percent is not None and test_percent is not None and val_percent + test_percent > 90:
            self.add_error("test_percent", "Validation and test together may take at most 90 percent.")
        if self.has_error("source_type") or self.has_error("clone_of"):
            return cleaned
        source_type = cleaned["source_type"]
        # Whether the splits can be made is checked only once the numbers they need are right;
        # the paths are checked whatever else is wrong, so that every mistake shows at once.
        numbers = ("val_percent", "test_percent", "seed", "min_per_class", "max_per_class")
        options = None
        if not any(self.has_error(name) for name in numbers):
            options = {name: cleaned.get(name) for name in numbers}
        for field in ALL_SOURCE_FIELDS - SOURCE_FIELDS[source_type]:
            cleaned[field] = ""
        try:
            if source_type == Dataset.SourceType.FOLDER:
                self._clean_folders(cleaned, options)
            elif source_type == Dataset.SourceType.ARCHIVE:
                self._clean_archive(cleaned, options)
            else:
                self._clean_lists(cleaned, options)
        except _FieldError as exc:
            self.add_error(exc.field, str(exc))
        self._check_storage(cleaned)
        return cleaned

    def _check_storage(self, cleaned):
        """A team over its storage quota takes no new dataset (quotas.usage)."""
        team, upload = cleaned.get("team"), cleaned.get("archive")
        if team is None or self.has_error("team"):
            return
        incoming = upload.size if upload is not None and cleaned.get("source_type") == Dataset.SourceType.ARCHIVE else 0
        problem = quota_usage.storage_refusal(team, incoming)
        if problem:
            self.add_error("archive" if incoming else "team", problem[:1].upper() + problem[1:])

    def _clean_folders(self, cleaned, options):
        roots = {}
        for field in ("source_folder", "val_folder", "test_folder"):
            value = (cleaned.get(field) or "").strip()
            if not value:
                if field == "source_folder":
                    raise _FieldError(field, "Name the folder with one subfolder per class.")
                cleaned[field] = ""
                continue
            with _on_field(field):
                roots[field] = rules.resolve_import_path(value)
                imaging.scan_class_folders(roots[field])  # the folder's own mistakes, on its own field
            cleaned[field] = str(roots[field])
        for field, percent in (("val_folder", "val_percent"), ("test_folder", "test_percent")):
            if field in roots:
                cleaned[percent] = 0
        if options is None:
            return
        options.update(val_percent=cleaned["val_percent"], test_percent=cleaned["test_percent"])
        with _on_field(self._plan_error_field(cleaned, "source_folder")):
            sources.plan_folders(
                roots["source_folder"], val_root=roots.get("val_folder"), test_root=roots.get("test_folder"), **options
            )

    def _clean_archive(self, cleaned, options):
        upload = cleaned.get("archive")
        cleaned["source_folder"] = ""
        if upload is None:
            source = self.clone_source
            if source is None or source.source_type != Dataset.SourceType.ARCHIVE:
                raise _FieldError("archive", "Choose the archive to upload.")
            if not source.extracted_dir.is_dir():
                raise _FieldError("archive", f"The images of “{source.name}” are gone; upload the archive again.")
            cleaned["archive_name"] = source.archive_name
            if options is not None:
                with _on_field(self._plan_error_field(cleaned, "archive")):
                    sources.plan_folders(source.extracted_dir, **options)
            return
        limits = rules.archive_limits()
        if upload.size > limits.max_bytes:
            raise _FieldError("archive", f"The archive is larger than the limit of {limits.max_bytes / 2**30:.1f} GiB.")
        with _on_field("archive"):
            on_disk = getattr(upload, "temporary_file_path", None)
            self.inspection = archives.inspect_archive(on_disk() if on_disk else upload, limits)
        if not self.inspection.members:
            raise _FieldError(
                "archive", "The archive holds no images in class folders (expected cats/1.jpg, dogs/2.png…)."
            )
        cleaned["archive_name"] = upload.name[:255]
        if options is not None:
            with _on_field(self._plan_error_field(cleaned, "archive")):
                sources.plan_counts(self.inspection.class_counts, **options)

    def _clean_lists(self, cleaned, options):
        allowed = [self.clone_source.upload_dir] if self.clone_source is not None else []
        contents = {}
        for field, upload_field, _ in LIST_FIELDS:
            upload, value = cleaned.get(upload_field), (cleaned.get(field) or "").strip()
            words = LIST_WORDS[field]
            if upload is not None:
                if upload.size > rules.MAX_LIST_BYTES:
                    raise _FieldError(upload_field, f"The {words} is larger than {rules.MAX_LIST_BYTES >> 20} MiB.")
                contents[field] = b"".join(upload.chunks())
                cleaned[field] = ""  # stored in the dataset's uploads once it exists
            elif value:
                with _on_field(field):
                    path = rules.resolve_import_path(value, allowed=allowed)
                    contents[field] = rules.read_list_file(path, words)
                cleaned[field] = str(path)
            elif field in ("labels_file", "train_list"):
                raise _FieldError(field, f"Name the {words} on the server, or upload it.")
            else:
                cleaned[field] = ""
        prefix = None
        if (cleaned.get("list_prefix") or "").strip():
            with _on_field("list_prefix"):
                prefix = rules.resolve_import_path(cleaned["list_prefix"])
                if not prefix.is_dir():
                    raise imaging.ImagingError(f"There is no folder at {prefix}.")
            cleaned["list_prefix"] = str(prefix)
        else:
            cleaned["list_prefix"] = ""
        self.list_contents = contents

        field_of = {"train": "train_list", "val": "val_list", "test": "test_list"}
        with _on_field(self._list_field("labels_file", cleaned)):
            classes = lists.read_labels(contents["labels_file"])
        parsed = {}
        for split in ("train", "val", "test"):
            field = field_of[split]
            if field in contents:
                with _on_field(self._list_field(field, cleaned)):
                    parsed[split] = lists.parse_list(contents[field], classes, LIST_WORDS[field])
        for split, percent in (("val", "val_percent"), ("test", "test_percent")):
            if split in parsed:
                cleaned[percent] = 0
        if options is None:
            return
        options.update(val_percent=cleaned["val_percent"], test_percent=cleaned["test_percent"])
        try:
            sources.plan_lists(
                classes,
                parsed,
                list_names={split: LIST_WORDS[field_of[split]] for split in parsed},
                prefix=prefix,
                roots=rules.import_roots(),
                strict=True,
                **options,
            )
        except sources.ListProblem as exc:
            raise _FieldError(self._list_field(field_of[exc.split], cleaned), str(exc)) from None
        except imaging.ImagingError as exc:
            raise _FieldError(self._plan_error_field(cleaned, "train_list"), str(exc)) from None

    def _list_field(self, field, cleaned):
        """Errors about a list go next to where it came from: the upload, or the path."""
        upload_field = next(upload for name, upload, _ in LIST_FIELDS if name == field)
        return upload_field if cleaned.get(upload_field) is not None else field

    def _plan_error_field(self, cleaned, source_field):
        """Splits that cannot be made are the percentages' fault; too few classes, the minimum's."""
        if cleaned["val_percent"]:
            return "val_percent"
        if cleaned["test_percent"]:
            return "test_percent"
        if cleaned["min_per_class"] > 1:
            return "min_per_class"
        return source_field

    # --- Creating ------------------------------------------------------------------------------------
    def create(self, owner):
        """Save the dataset with its uploads in its own folder, and queue its build."""
        dataset = self.save(commit=False)
        dataset.owner = owner
        dataset.archive_name = self.cleaned_data.get("archive_name", "")
        dataset.cloned_from = self.clone_source
        with transaction.atomic():
            dataset.save()
            try:
                self._store_uploads(dataset)
            except BaseException:
                shutil.rmtree(dataset.upload_dir, ignore_errors=True)
                raise
            dataset.save()
            dataset.submit()
        return dataset

    def _store_uploads(self, dataset):
        folder = dataset.upload_dir
        cleaned = self.cleaned_data
        if dataset.source_type == Dataset.SourceType.ARCHIVE:
            folder.mkdir(parents=True, exist_ok=True)
            upload = cleaned.get("archive")
            target = folder / f"archive.{self.inspection.kind}" if upload is not None else None
            if upload is not None and hasattr(upload, "temporary_file_path"):
                file_move_safe(upload.temporary_file_path(), target)  # a rename: no second copy of gigabytes
            elif upload is not None:
                with open(target, "wb") as out:
                    for chunk in upload.chunks():
                        out.write(chunk)
            else:
                _link_tree(self.clone_source.extracted_dir, dataset.extracted_dir)
        elif dataset.source_type == Dataset.SourceType.LISTS:
            source_uploads = self.clone_source.upload_dir if self.clone_source is not None else None
            for field, upload_field, stored_name in LIST_FIELDS:
                value = getattr(dataset, field)
                uploaded = cleaned.get(upload_field) is not None
                from_clone = source_uploads is not None and value and Path(value).is_relative_to(source_uploads)
                if uploaded or from_clone:
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / stored_name).write_bytes(self.list_contents[field])
                    setattr(dataset, field, str(folder / stored_name))


class DatasetSettingsForm(OwnedSettingsForm):
    """What may change after the build: the name and who sees it."""

    class Meta:
        model = Dataset
        fields = SETTINGS_FIELDS

    def sharing_sources(self):
        return [(self.instance.cloned_from, "a clone of it")]

    def made_from_this(self):
        return [*self.instance.experiments.select_related("team"), *self.instance.clones.select_related("team")]


class _FieldError(Exception):
    def __init__(self, field, message):
        super().__init__(message)
        self.field = field


@contextlib.contextmanager
def _on_field(field):
    """Turn the cores' ImagingError into an error on one field of the form."""
    try:
        yield
    except imaging.ImagingError as exc:
        raise _FieldError(field, _sentence(str(exc))) from None


def _sentence(message):
    message = message[:1].upper() + message[1:]
    return message if message.endswith((".", "?", "!")) else message + "."


def _link_tree(source, target):
    """Copy a folder of images by hard links: instant, no extra space, and independent of the
    original (deleting one dataset leaves the other's files)."""

    def link_or_copy(src, dst):
        try:
            Path(dst).hardlink_to(src)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy)
