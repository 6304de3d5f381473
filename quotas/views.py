"""Changing a team's quota from its page: superusers set the organisation's limits, the
team's admins may narrow them; anyone else in the team is refused, anyone outside it
finds no team."""

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts import audit
from accounts.models import Team
from accounts.teams import may_manage
from quotas import admission
from quotas.forms import QuotaForm
from quotas.models import TeamQuota


def _blank(value):
    return "unlimited" if value is None else f"{value:g}"


@require_POST
def quota_edit(request, pk):
    team = get_object_or_404(Team, pk=pk)
    if not (request.user.is_superuser or team.memberships.filter(user=request.user).exists()):
        raise Http404("No team matches the given query.")
    if not may_manage(request.user, team):
        raise PermissionDenied("Only the organisation's administrators and this team's admins change its quota.")
    quota, _ = TeamQuota.objects.get_or_create(team=team)
    organisation = request.user.is_superuser
    form = QuotaForm(request.POST, quota=quota, organisation=organisation)
    if not form.is_valid():
        for field, errors in form.errors.items():
            label = form.fields[field].label if field in form.fields else "Quota"
            messages.error(request, f"{label}: {' '.join(errors)}")
        return redirect(reverse("team-detail", args=[team.pk]) + "#quota")
    changes = form.changes()
    if changes:
        whose = "organisation limit" if organisation else "team limit"
        detail = "; ".join(f"{whose} {label}: {_blank(old)} → {_blank(new)}" for label, old, new in changes)
        # The audit log has no action of its own for quotas: an admin action, on the team.
        audit.record(audit.Action.ADMIN, user=request.user, obj=team, request=request, detail=f"quota: {detail}")
        # A higher limit may let waiting experiments start.
        admission.wake(team.pk)
        messages.success(request, "The quota was changed.")
    return redirect(reverse("team-detail", args=[team.pk]) + "#quota")
