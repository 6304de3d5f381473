"""Datasets grouped the way people share them: private ones, then one group per team, then
those shared with the whole organisation.  The console and the new-experiment form use it."""

from accounts.models import Visibility

_PRIVATE, _TEAM, _ORGANISATION = range(3)


def group_by_team(datasets):
    """[(label, [dataset, ...]), ...] in the order: private, each team by name, organisation."""
    groups = {}
    for dataset in datasets:
        groups.setdefault(_group(dataset), []).append(dataset)
    return [(label, members) for (_, label), members in sorted(groups.items())]


def grouped_choices(datasets):
    """Choices for a dataset <select>, one <optgroup> per group: set them on a ModelChoiceField
    (`field.choices = grouped_choices(field.queryset)`); validation still uses its queryset."""
    return [(label, [(dataset.pk, str(dataset)) for dataset in members]) for label, members in group_by_team(datasets)]


def _group(dataset):
    if dataset.visibility == Visibility.TEAM and dataset.team_id is not None:
        return (_TEAM, dataset.team.name)
    if dataset.visibility == Visibility.ORGANISATION:
        return (_ORGANISATION, "Organisation")
    return (_PRIVATE, "Private")
