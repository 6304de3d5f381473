"""Which consoles hear of a row: the groups a console socket joins, and the compact event a
job sends them when it changes.

A row of an owned job (an experiment, a dataset) goes to the group of its owner, of its
team when it is shared with the team, of the organisation when it is shared with everyone,
and to the group every superuser's console joins. The groups only narrow who is told: the
console's consumer reads the row afresh for its viewer, under accounts.access, before it
sends anything, so a group that is out of date shows nobody a row they may not see.
"""

from accounts.models import Membership, Visibility
from jobs.events import broadcast

ALL = "console-all"  # every row: the superusers' consoles
ORGANISATION = "console-org"


def user_group(user_id):
    return f"console-user-{user_id}"


def team_group(team_id):
    return f"console-team-{team_id}"


def groups_of(owner_id, team_id, visibility):
    groups = [ALL, user_group(owner_id)]
    if visibility == Visibility.TEAM and team_id is not None:
        groups.append(team_group(team_id))
    elif visibility == Visibility.ORGANISATION:
        groups.append(ORGANISATION)
    return groups


def viewer_groups(user):
    """The groups whose rows `user` may see some of; re-read while the socket is open, so a
    membership added or removed changes what it hears."""
    if not user.is_authenticated or not user.is_active:
        return set()
    if user.is_superuser:
        return {ALL}
    teams = Membership.objects.filter(user=user).values_list("team_id", flat=True)
    return {user_group(user.pk), ORGANISATION, *(team_group(team_id) for team_id in teams)}


def row_event(obj):
    return {"type": "row", "kind": obj.group_prefix, "id": obj.pk}


def announce(obj):
    # Sharing read afresh: a running job's copy of its row is as old as the job.
    sharing = type(obj)._base_manager.filter(pk=obj.pk).values_list("owner_id", "team_id", "visibility").first()
    if sharing is None:
        return  # deleted meanwhile: the consoles drop it at their next check
    event = row_event(obj)
    for group in groups_of(*sharing):
        broadcast(group, event)
