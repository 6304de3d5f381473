from django import forms

from quotas.models import TeamQuota
from quotas.usage import hours_words, size_words

GB = 10**9


class QuotaForm(forms.Form):
    """A team's limits as a person types them (storage in GB). A superuser sets the
    organisation's; a team admin the team's own, which may only be lower."""

    running = forms.IntegerField(min_value=0, required=False, label="Running experiments at once")
    hours = forms.FloatField(min_value=0, required=False, label="Device-hours a month")
    storage_gb = forms.FloatField(min_value=0, required=False, label="Stored GB")

    FIELDS = (("running", "max_running"), ("hours", "max_device_hours"), ("storage_gb", "max_stored_bytes"))

    def __init__(self, *args, quota, organisation, **kwargs):
        self.quota, self.organisation = quota, organisation
        prefix = "" if organisation else "team_"
        initial = {}
        for field, name in self.FIELDS:
            value = getattr(quota, prefix + name)
            initial[field] = value / GB if field == "storage_gb" and value is not None else value
        super().__init__(*args, initial=initial, **kwargs)
        if not organisation:
            for field, name in self.FIELDS:
                ceiling = getattr(quota, name)
                words = "unlimited" if ceiling is None else self._words(field, ceiling)
                self.fields[field].help_text = f"At most the organisation's: {words}. Blank: the organisation's."

    @staticmethod
    def _words(field, value):
        if field == "storage_gb":
            return size_words(value)
        return hours_words(value) if field == "hours" else str(value)

    def clean(self):
        cleaned = super().clean()
        if self.organisation:
            return cleaned
        for field, name in self.FIELDS:
            value, ceiling = cleaned.get(field), getattr(self.quota, name)
            if field == "storage_gb" and value is not None:
                value = value * GB
            if value is not None and ceiling is not None and value > ceiling:
                self.add_error(
                    field,
                    f"The organisation allows at most {self._words(field, ceiling)}; a team admin may only set less.",
                )
        return cleaned

    def changes(self):
        """Save the limits; [(field label, before, after)] of what changed."""
        prefix = "" if self.organisation else "team_"
        changed = []
        for field, name in self.FIELDS:
            value = self.cleaned_data.get(field)
            if field == "storage_gb" and value is not None:
                value = round(value * GB)
            before = getattr(self.quota, prefix + name)
            if value != before:
                setattr(self.quota, prefix + name, value)
                label = TeamQuota._meta.get_field(name).verbose_name
                changed.append((label, before, value))
        if changed:
            self.quota.save()
        return changed
