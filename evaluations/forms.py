"""The "classify many" form: a snapshot and exactly one source of images. The page and the
API both use it, so each rule is written once; the job checks the paths again."""

from django import forms
from django.conf import settings
from django.db import transaction

from accounts.access import evaluation_reach
from datasets import archives, imaging, rules
from datasets.models import SPLIT_NAMES
from evaluations import core
from evaluations.models import Evaluation

SOURCE_FIELDS = {"split": "split", "folder": "folder", "list": "list_file", "archive": "archive"}


class EvaluationForm(forms.Form):
    snapshot = forms.ModelChoiceField(queryset=None, required=False, empty_label=None)
    source = forms.ChoiceField(choices=Evaluation.Source.choices, widget=forms.RadioSelect, initial="split")
    split = forms.ChoiceField(required=False, label="Split")
    folder = forms.CharField(
        required=False,
        max_length=1000,
        label="Folder on the server",
        help_text="One subfolder per class, named as the dataset's classes; under the import folders.",
    )
    list_path = forms.CharField(
        required=False,
        max_length=1000,
        label="List on the server",
        help_text="One image per line: “path [label]”, the label by name or number. Relative paths are taken "
        "from the list's folder.",
    )
    list_file = forms.FileField(
        required=False, label="…or upload a list", help_text="Relative paths are taken from the import folders."
    )
    archive = forms.FileField(
        required=False,
        label="Archive",
        help_text=".zip or .tar.gz with one folder per class (cats/1.jpg, dogs/2.png…).",
    )

    def __init__(self, *args, experiment, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.experiment, self.user = experiment, user
        self.fields["snapshot"].queryset = experiment.snapshots.all()
        self.fields["snapshot"].label_from_instance = lambda s: f"Epoch {s.epoch_label}"
        dataset = experiment.dataset
        self.fields["split"].choices = [
            (split, f"{SPLIT_NAMES[split]} ({dataset.split_total(split):,} images)")
            for split in ("val", "test")
            if dataset.split_total(split)
        ]
        self.fields["archive"].widget.attrs.update(accept=".zip,.tar.gz,.tgz,.tar,.tar.bz2,.tar.xz")
        self.fields["list_file"].widget.attrs.update(accept=".txt,text/plain")
        self.inspection = None

    def clean_snapshot(self):
        snapshot = self.cleaned_data.get("snapshot") or self.experiment.snapshots.first()  # newest first
        if snapshot is None:
            raise forms.ValidationError("This experiment has no snapshot yet.")
        return snapshot

    def clean(self):
        cleaned = super().clean()
        source = cleaned.get("source")
        check = {
            "split": self._clean_split,
            "folder": self._clean_folder,
            "list": self._clean_list,
            "archive": self._clean_archive,
        }.get(source)
        if check is not None:
            try:
                check(cleaned)
            except _FieldError as exc:
                self.add_error(exc.field, exc.message)
        return cleaned

    def _clean_split(self, cleaned):
        if not cleaned.get("split"):
            raise _FieldError("split", "This dataset has no validation or test images to evaluate.")

    def _clean_folder(self, cleaned):
        folder = cleaned.get("folder", "").strip()
        if not folder:
            raise _FieldError("folder", "Name a folder on the server.")
        with _on_field("folder"):
            root = rules.resolve_import_path(folder)
            _, found = imaging.scan_class_folders(root)
            _check_count(len(found), "The folder")
        cleaned["path"] = str(root)

    def _clean_list(self, cleaned):
        upload, path = cleaned.get("list_file"), cleaned.get("list_path", "").strip()
        if bool(upload) == bool(path):
            raise _FieldError("list_path", "Give the list as a server path or upload it, one of the two.")
        field = "list_file" if upload else "list_path"
        with _on_field(field):
            if upload:
                if upload.size > rules.MAX_LIST_BYTES:
                    raise imaging.ImagingError(f"The list is larger than {rules.MAX_LIST_BYTES >> 20} MiB.")
                data = upload.read()
                upload.seek(0)
            else:
                real = rules.resolve_import_path(path)
                data = rules.read_list_file(real, "list")
                cleaned["path"] = str(real)
            entries, _ = core.parse_list(data, self.experiment.dataset.classes)
            if not entries:
                raise imaging.ImagingError("The list names no image.")
            _check_count(len(entries), "The list")
        cleaned["upload_name"] = upload.name[:255] if upload else ""

    def _clean_archive(self, cleaned):
        upload = cleaned.get("archive")
        if upload is None:
            raise _FieldError("archive", "Choose the archive to upload.")
        limits = rules.archive_limits()
        with _on_field("archive"):
            on_disk = getattr(upload, "temporary_file_path", None)
            self.inspection = archives.inspect_archive(on_disk() if on_disk else upload, limits)
            if not self.inspection.members:
                raise imaging.ImagingError(
                    "The archive holds no images in class folders (expected cats/1.jpg, dogs/2.png…)."
                )
            _check_count(len(self.inspection.members), "The archive")
        upload.seek(0)
        cleaned["upload_name"] = upload.name[:255]

    def create(self):
        """The evaluation, shared exactly as widely as its experiment (a viewer's of a team's
        experiment: private, see evaluation_reach), queued once committed."""
        data = self.cleaned_data
        reach = evaluation_reach(self.user, self.experiment)
        with transaction.atomic():
            evaluation = Evaluation.objects.create(
                owner=self.user,
                team_id=reach.team_id,
                visibility=reach.visibility,
                experiment=self.experiment,
                snapshot=data["snapshot"],
                snapshot_epoch=data["snapshot"].epoch,
                source=data["source"],
                split=data.get("split", "") if data["source"] == "split" else "",
                path=data.get("path", ""),
                upload_name=data.get("upload_name", ""),
            )
            upload = data.get("list_file") if data["source"] == "list" else data.get("archive")
            if data["source"] in ("list", "archive") and upload:
                evaluation.upload_dir.mkdir(parents=True, exist_ok=True)
                name = "list.txt" if data["source"] == "list" else f"archive.{self.inspection.kind}"
                target = evaluation.upload_dir / name
                with open(target, "wb") as out:
                    for piece in upload.chunks():
                        out.write(piece)
                if data["source"] == "list":
                    Evaluation.objects.filter(pk=evaluation.pk).update(path=str(target))
                    evaluation.path = str(target)
            evaluation.submit()
        return evaluation


def _check_count(count, what):
    core.check_count(count, what, settings.EVALUATION_MAX_IMAGES)


class _FieldError(Exception):
    def __init__(self, field, message):
        super().__init__(message)
        self.field, self.message = field, message


class _on_field:
    """Turns an ImagingError (a path outside the roots, a broken archive) into that field's error."""

    def __init__(self, field):
        self.field = field

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, traceback):
        if isinstance(exc, imaging.ImagingError):
            raise _FieldError(self.field, str(exc)) from None
        return False
