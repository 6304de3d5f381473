from django import forms

from accounts import audit
from accounts.access import (
    Reach,
    allowed_visibilities,
    narrowing_problem,
    sharing_problem,
    teams_for,
    widest_visibility,
    work_problem,
)
from accounts.models import AuditEntry, Team, Visibility

# What the settings of anything owned change after it was made.
SETTINGS_FIELDS = ["name", "visibility", "team"]


class OwnedObjectForm(forms.ModelForm):
    """Visibility and team fields of anything a user owns: the team list holds only the
    user's own teams, "team" visibility needs one, and nothing is shared more widely than
    what it was made from (nor narrowed below what was made from it)."""

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        # The team it has stays acceptable (a rename must not fail because its owner now only
        # views that team); sharing with it anew is refused in check_sharing.
        offer_working_teams(self, keep=self.instance.team_id if self.instance.pk else None)
        self.fields["team"].required = False
        self.fields["team"].empty_label = "— no team —"
        self.fields["visibility"].help_text = "Who may see it. The team's admins may change it too."
        offer_allowed_sharing(self, self.sharing_sources())

    def sharing_sources(self):
        """[(source, what this object is to it)], e.g. [(dataset, "an experiment on it")]:
        what it was made from. A source may be None (gone)."""
        return []

    def made_from_this(self):
        """The objects made from this one."""
        return []

    def clean(self):
        cleaned = super().clean()
        check_sharing(self, cleaned, self.sharing_sources(), self.made_from_this() if self.instance.pk else [])
        return cleaned


class OwnedSettingsForm(OwnedObjectForm):
    """The settings of something already made: its name and who sees it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.shared_before = Reach.of(self.instance)

    def save(self, commit=True):
        obj = super().save(commit=commit)
        if commit:
            audit.sharing_changed(self.user, obj, self.shared_before, Reach.of(obj))
        return obj


def offer_allowed_sharing(form, sources):
    """Offer only the visibilities (and, when the sources are one team's, that team) that
    `sources` allow. The fields still accept the others, so that check_sharing can refuse
    them with the reason rather than with "Select a valid choice"."""
    sources = [source for source, _ in sources if source is not None]
    if not sources:
        return
    reach = widest_visibility(*sources)
    allowed = allowed_visibilities(sources)
    visibility = form.fields["visibility"]
    visibility.widget.choices = [choice for choice in visibility.choices if choice[0] in allowed]
    visibility.help_text = "Who may see it: no more people than may see what it is made from."
    if reach.visibility == Visibility.TEAM:
        team = form.fields["team"]
        team.widget.choices = [choice for choice in team.choices if choice[0] in ("", reach.team_id)]


def offer_working_teams(form, keep=None):
    """Offer on the form's "team" field the teams its user works for (accounts.access.teams_for),
    and `keep` (a team id) besides. A form filled in from something else (a clone) whose team
    the user only views starts from private instead."""
    teams = teams_for(form.user)
    if keep is not None:
        teams = (teams | Team.objects.filter(pk=keep)).distinct()
    field = form.fields["team"]
    field.queryset = teams
    field.error_messages["invalid_choice"] = (
        "Select a valid choice: one of the teams you work for (a team's viewers see its work but do not share with it)."
    )
    team = form.initial.get("team")
    team_id = getattr(team, "pk", team)
    if team_id in (None, "") or form.fields["team"].queryset.filter(pk=team_id).exists():
        return
    form.initial["team"] = None
    if form.initial.get("visibility") == Visibility.TEAM:
        form.initial["visibility"] = Visibility.PRIVATE


def check_sharing(form, cleaned, sources, made_from_it=()):
    """Refuse a team visibility without a team, and, on the visibility field, a visibility
    and team wider than a source allows or narrower than what was made from the object."""
    visibility = cleaned.get("visibility")
    team = cleaned.get("team")
    if visibility == Visibility.TEAM and team is None and not form.has_error("team"):
        form.add_error("team", "Choose the team that may see it, or make it private.")
    if visibility is None or form.has_error("team"):
        return
    team_id = team.pk if team is not None else None
    if getattr(form, "shared_before", None) == Reach.sharing(visibility, team_id):
        return  # shared as before: a rename must not fail on a row older than the rule
    reach = Reach.sharing(visibility, team_id)
    problem = (
        (work_problem(form.user, reach.team_id) if reach.team_id is not None else None)
        or sharing_problem(form.user, visibility, team_id, sources)
        or narrowing_problem(form.user, visibility, team_id, made_from_it)
    )
    if problem:
        form.add_error("visibility", problem)


# --- API tokens, the audit log's filters ------------------------------------------------------

TOKEN_LIFETIMES = [("", "Never"), ("7", "7 days"), ("30", "30 days"), ("90", "90 days"), ("365", "1 year")]


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. “nightly sweep script”.")
    read_only = forms.BooleanField(required=False, label="Read-only (may read, may not change anything)")
    expires_in = forms.ChoiceField(choices=TOKEN_LIFETIMES, required=False, label="Expires after")


class AuditFilterForm(forms.Form):
    action = forms.ChoiceField(required=False, choices=[("", "Any action"), *AuditEntry.Action.choices])
    user = forms.CharField(required=False, max_length=150, help_text="Who did it: a username.")
    team = forms.ModelChoiceField(required=False, queryset=Team.objects.none(), empty_label="Any team")
    since = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="Until", widget=forms.DateInput(attrs={"type": "date"}))

    def __init__(self, *args, teams, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams

    def clean(self):
        cleaned = super().clean()
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since > until:
            self.add_error("until", "The end date comes before the start date.")
        return cleaned
