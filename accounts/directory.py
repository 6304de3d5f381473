"""Team memberships from the organisation's directory, kept in step at every login and
between logins too (LDAP: accounts.ldap_sync; OpenID Connect: accounts.oidc_refresh).

OpenID Connect and LDAP both hand over a list of group names; each group is a team, and a
group named with the admin suffix ("vision:admin", OIDC_ADMIN_SUFFIX) makes the user an
admin of the team ("vision"), one named with the viewer suffix ("vision:viewer",
OIDC_VIEWER_SUFFIX) a viewer of it, who sees what the team shares but queues no work as the
team's (accounts.access). A user in several of a team's groups takes the widest role: admin,
then member, then viewer. What the directory manages is marked with its source, so a login
adds and removes only the directory's own memberships: a membership made on the platform
stays.
"""

from django.db import transaction

from accounts import audit
from accounts.models import Membership, Source, Team

TEAM_NAME_MAX = Team._meta.get_field("name").max_length


# The wider role wins when a user is in several of one team's groups.
RANK = {Membership.Role.VIEWER: 0, Membership.Role.MEMBER: 1, Membership.Role.ADMIN: 2}


def roles_from_groups(groups, admin_suffix, viewer_suffix=""):
    """{team name: role} for the directory's group names; admin wins over member, member
    over viewer."""
    roles = {}
    for group in groups:
        group = str(group).strip()
        role = Membership.Role.MEMBER
        if admin_suffix and group.endswith(admin_suffix):
            group, role = group[: -len(admin_suffix)].strip(), Membership.Role.ADMIN
        elif viewer_suffix and group.endswith(viewer_suffix):
            group, role = group[: -len(viewer_suffix)].strip(), Membership.Role.VIEWER
        # A name the team table cannot hold is no team at all rather than a truncated
        # name that could collide with another one.
        if not group or len(group) > TEAM_NAME_MAX:
            continue
        if group not in roles or RANK[role] > RANK[roles[group]]:
            roles[group] = role
    return roles


def actor_name(source):
    """Who the audit log says made a change the directory asked for (no person did)."""
    return f"directory ({Source(source).label})"


@transaction.atomic
def sync_teams(user, groups, *, source, admin_suffix, viewer_suffix=""):
    """Make the user's memberships from `source` exactly those the groups name; returns how
    many memberships were added, given another role or removed."""
    roles = roles_from_groups(groups, admin_suffix, viewer_suffix)
    by = actor_name(source)
    changes = 0
    for name, role in roles.items():
        team, team_created = Team.objects.get_or_create(name=name, defaults={"source": source})
        if team_created:
            audit.record(audit.Action.TEAM_CREATED, obj=team, actor_name=by)
        membership, created = Membership.objects.get_or_create(
            user=user, team=team, defaults={"role": role, "source": source}
        )
        if created:
            audit.membership_changed(audit.Action.MEMBER_ADDED, membership, actor_name=by)
            changes += 1
        elif membership.source == source and membership.role != role:
            membership.role = role
            membership.save(update_fields=["role"])
            audit.membership_changed(audit.Action.ROLE_CHANGED, membership, actor_name=by)
            changes += 1
    gone = Membership.objects.filter(user=user, source=source).exclude(team__name__in=roles).select_related("team")
    for membership in gone:
        audit.membership_changed(audit.Action.MEMBER_REMOVED, membership, actor_name=by)
        changes += 1
    gone.delete()
    return changes
