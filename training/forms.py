import math

from django import forms

from accounts.forms import OwnedObjectForm
from datasets.models import Dataset
from training.models import Experiment


class ExperimentForm(OwnedObjectForm):
    class Meta:
        model = Experiment
        fields = ["name", "dataset", "network", "epochs", "batch_size", "solver", "learning_rate", "seed", "visibility", "team"]
        help_texts = {
            "network": "Sized to the dataset's images and classes.",
            "seed": "Same seed, same data and settings: the same run.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        usable = Dataset.objects.visible_to(self.user).filter(status=Dataset.Status.DONE)
        self.fields["dataset"].queryset = usable.select_related("team")
        self.fields["dataset"].empty_label = None if usable.exists() else "— no ready dataset yet —"
        self.fields["epochs"].widget.attrs.update(min=1, max=1000)
        self.fields["batch_size"].widget.attrs.update(min=1, max=4096)
        self.fields["learning_rate"].widget.attrs.update(step="any", min=0)

    def clean_epochs(self):
        value = self.cleaned_data["epochs"]
        if not 1 <= value <= 1000:
            raise forms.ValidationError("Must be between 1 and 1000 epochs.")
        return value

    def clean_learning_rate(self):
        value = self.cleaned_data["learning_rate"]
        if not math.isfinite(value) or value <= 0:
            raise forms.ValidationError("The learning rate must be a number greater than 0.")
        return value

    def clean(self):
        cleaned = super().clean()
        dataset, network = cleaned.get("dataset"), cleaned.get("network")
        if dataset is None:
            return cleaned
        batch_size = cleaned.get("batch_size")
        train_images = dataset.split_total("train")
        if batch_size is not None and not 1 <= batch_size <= train_images:
            self.add_error(
                "batch_size", f"Must be between 1 and the {train_images} images of the dataset's training split."
            )
        if network:
            from models.networks import check_input

            problem = check_input(network, dataset.image_shape, len(dataset.classes))
            if problem:
                self.add_error("network", problem)
        return cleaned


class ClassifyForm(forms.Form):
    image = forms.FileField(help_text="Any common format, any size, color or gray.")
    snapshot = forms.ModelChoiceField(queryset=None, empty_label=None)

    def __init__(self, *args, snapshots, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["snapshot"].queryset = snapshots
        self.fields["snapshot"].label_from_instance = lambda s: f"Epoch {s.epoch}"
