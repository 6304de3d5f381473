from django import forms

from accounts.forms import OwnedObjectForm
from accounts.models import Visibility
from models.models import SavedNetwork


class SavedNetworkForm(OwnedObjectForm):
    class Meta:
        model = SavedNetwork
        fields = ["name", "description", "spec", "visibility", "team"]
        labels = {"spec": "Network (YAML or JSON)"}
        widgets = {
            "description": forms.Textarea(attrs={"rows": 3}),
            "spec": forms.Textarea(attrs={"rows": 16, "spellcheck": "false", "class": "code"}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        teams = self.fields["team"].queryset
        # The model starts a network shared with its team; without a team to share with, the
        # form offers private or everyone and starts private.
        self.has_teams = teams.exists()
        if not self.has_teams:
            visibility = self.fields["visibility"]
            visibility.widget.choices = [choice for choice in visibility.choices if choice[0] != Visibility.TEAM]
            if not self.instance.pk:
                self.initial["visibility"] = Visibility.PRIVATE
        elif not self.instance.pk and "team" not in self.initial:
            self.initial["team"] = teams.order_by("name").first().pk

    def clean_spec(self):
        from models.networks import SpecError, parse_spec

        spec = self.cleaned_data["spec"]
        try:
            parse_spec(spec)
        except SpecError as exc:
            raise forms.ValidationError(str(exc)) from None
        return spec
