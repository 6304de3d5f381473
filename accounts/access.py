"""The one rule for who may see and who may change what.

Every page, API call, WebSocket and file download asks here; no view decides access on its
own. An owned object (dataset, experiment) has `owner`, `team` and `visibility`:

- the owner sees and changes it;
- private: nobody else sees it;
- team: members of its team see it, admins of its team change it too;
- organisation: every active user sees it; admins of its team change it.

Superusers see and change everything (that is what the admin is for).
"""

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import models
from django.http import Http404

from accounts.models import Membership, Team, Visibility


class OwnedQuerySet(models.QuerySet):
    def visible_to(self, user):
        if not user.is_authenticated or not user.is_active:
            return self.none()
        if user.is_superuser:
            return self
        teams = Membership.objects.filter(user=user).values("team_id")
        return self.filter(
            models.Q(owner=user)
            | models.Q(visibility=Visibility.ORGANISATION)
            | models.Q(visibility=Visibility.TEAM, team__in=teams)
        )


class Owned(models.Model):
    """What every object under the rule has: an owner, maybe a team, and a visibility."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="%(class)ss")
    team = models.ForeignKey("accounts.Team", models.SET_NULL, null=True, blank=True, related_name="%(class)ss")
    visibility = models.CharField(max_length=20, choices=Visibility.choices, default=Visibility.PRIVATE)

    objects = OwnedQuerySet.as_manager()

    class Meta:
        abstract = True


def can_view(user, obj):
    return obj.__class__._default_manager.filter(pk=obj.pk).visible_to(user).exists()


def can_edit(user, obj):
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_superuser or obj.owner_id == user.pk:
        return True
    if obj.team_id is None or obj.visibility == Visibility.PRIVATE:
        return False
    return Membership.objects.filter(user=user, team_id=obj.team_id, role=Membership.Role.ADMIN).exists()


def get_visible_or_404(queryset, user, **lookup):
    """The object if `user` may see it; 404 whether it is hidden or missing, so that
    nobody learns what exists."""
    try:
        return queryset.visible_to(user).get(**lookup)
    except queryset.model.DoesNotExist:
        raise Http404(f"No {queryset.model._meta.verbose_name} matches the given query.") from None


def get_editable_or_404(queryset, user, **lookup):
    obj = get_visible_or_404(queryset, user, **lookup)
    if not can_edit(user, obj):
        # Seeing it is allowed, changing it is not: say so rather than pretend it is absent.
        raise PermissionDenied(f"You may view this {queryset.model._meta.verbose_name} but not change it.")
    return obj


def teams_for(user):
    """Teams whose name a user may put on a dataset or an experiment."""
    if user.is_superuser:
        return Team.objects.all()
    return Team.objects.filter(memberships__user=user)
