"""What the team page and the console show of quotas, for their templates to include
(quotas/_team.html, quotas/_usage.html) without the views that render them knowing."""

from django import template

from accounts.teams import may_manage
from quotas import usage
from quotas.forms import QuotaForm
from quotas.models import TeamQuota

register = template.Library()


@register.simple_tag
def team_quota(team, user):
    """A team's meters, and the form its viewer may change the quota with (or None)."""
    quota = usage.quota_of(team) or TeamQuota(team=team)
    form = None
    if may_manage(user, team):
        form = QuotaForm(quota=quota, organisation=user.is_superuser)
    return {"meters": usage.meters(team), "form": form, "organisation": user.is_superuser}


@register.simple_tag
def usage_lines(user):
    """[(team, meters)] of the user's teams that have a quota, for the console's one line."""
    if not user.is_authenticated:
        return []
    quotas = TeamQuota.objects.filter(team__memberships__user=user).select_related("team").order_by("team__name")
    return [(quota.team, usage.meters(quota.team)) for quota in quotas]
