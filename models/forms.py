from django import forms

from accounts.forms import OwnedObjectForm
from models.models import SavedNetwork


class SavedNetworkForm(OwnedObjectForm):
    class Meta:
        model = SavedNetwork
        fields = ["name", "description", "spec", "visibility", "team"]
        widgets = {"spec": forms.Textarea(attrs={"rows": 16, "spellcheck": "false", "class": "code"})}

    def clean_spec(self):
        from models.networks import SpecError, parse_spec

        spec = self.cleaned_data["spec"]
        try:
            parse_spec(spec)
        except SpecError as exc:
            raise forms.ValidationError(str(exc)) from None
        return spec
