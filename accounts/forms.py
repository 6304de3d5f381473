from django import forms

from accounts.access import teams_for
from accounts.models import Visibility


class OwnedObjectForm(forms.ModelForm):
    """Visibility and team fields of anything a user owns: the team list holds only the
    user's own teams, and "team" visibility needs one."""

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["team"].queryset = teams_for(user)
        self.fields["team"].required = False
        self.fields["team"].empty_label = "— no team —"
        self.fields["visibility"].help_text = "Who may see it. The team's admins may change it too."

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("visibility") == Visibility.TEAM and not cleaned.get("team"):
            self.add_error("team", "Choose the team that may see it, or make it private.")
        return cleaned
