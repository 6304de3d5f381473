from pathlib import Path

from django import forms
from django.conf import settings

from accounts.forms import OwnedObjectForm
from datasets import imaging
from datasets.models import Dataset

MAX_SIDE = 1024


def resolve_import_folder(value):
    """The real path of a folder a user named, if it lies under an import root.

    A relative path is taken relative to each import root in turn. Symlinks are resolved
    before the check, so a link cannot lead outside the roots.
    """
    roots = [Path(root).resolve() for root in settings.DATA_IMPORT_ROOTS]
    raw = Path(value.strip()).expanduser()
    candidates = [raw] if raw.is_absolute() else [root / raw for root in roots]
    for candidate in candidates:
        real = candidate.resolve()
        if any(real == root or real.is_relative_to(root) for root in roots):
            return real
    allowed = ", ".join(str(root) for root in roots) or "(none configured)"
    raise forms.ValidationError(f"This folder is outside the import folders. Allowed: {allowed}.")


def candidate_folders(max_depth=3):
    """Folders under the import roots, offered as suggestions in the form."""
    found = []
    for root in settings.DATA_IMPORT_ROOTS:
        root = Path(root)
        if not root.is_dir():
            continue
        stack = [(root, 0)]
        while stack and len(found) < 200:
            folder, depth = stack.pop()
            found.append(str(folder))
            if depth < max_depth:
                subfolders = sorted(
                    (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True
                )
                stack.extend((p, depth + 1) for p in subfolders[:50])
    return sorted(found)


class DatasetForm(OwnedObjectForm):
    class Meta:
        model = Dataset
        fields = ["name", "source_folder", "channels", "width", "height", "resize_mode", "val_percent", "visibility", "team"]
        labels = {
            "source_folder": "Training images",
            "channels": "Image type",
            "val_percent": "% for validation",
        }
        help_texts = {
            "source_folder": "A folder with one subfolder per class, e.g. mnist/train (relative to an import folder).",
            "val_percent": "Carved from each class, seeded and reproducible.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["resize_mode"].choices = [(Dataset.ResizeMode.SQUASH, "Squash")] + [
            choice for choice in Dataset.ResizeMode.choices if choice[0] != Dataset.ResizeMode.SQUASH
        ]
        self.fields["width"].widget.attrs.update(min=1, max=MAX_SIDE)
        self.fields["height"].widget.attrs.update(min=1, max=MAX_SIDE)
        self.fields["val_percent"].widget.attrs.update(min=0, max=90)

    def clean_source_folder(self):
        folder = resolve_import_folder(self.cleaned_data["source_folder"])
        # The full scan runs in the job; these are the mistakes worth catching before it.
        try:
            classes, _ = imaging.scan_class_folders(folder)
        except imaging.ImagingError as exc:
            raise forms.ValidationError(str(exc)) from None
        if len(classes) < 2:
            raise forms.ValidationError("A dataset needs at least two classes (two subfolders with images).")
        return str(folder)

    def _clean_side(self, field):
        value = self.cleaned_data[field]
        if value is None or not 1 <= value <= MAX_SIDE:
            raise forms.ValidationError(f"Must be between 1 and {MAX_SIDE} pixels.")
        return value

    def clean_width(self):
        return self._clean_side("width")

    def clean_height(self):
        return self._clean_side("height")

    def clean_val_percent(self):
        value = self.cleaned_data["val_percent"]
        if not 0 <= value <= 90:
            raise forms.ValidationError("Must be between 0 and 90 percent.")
        return value
