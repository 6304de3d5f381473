"""The one rule for who may see and who may change what.

Every page, API call, WebSocket and file download asks here; no view decides access on its
own. An owned object (dataset, experiment) has `owner`, `team` and `visibility`:

- the owner sees and changes it;
- private: nobody else sees it;
- team: members of its team see it, admins of its team change it too;
- organisation: every active user sees it; admins of its team change it.

Seeing is not working: a team's viewers see what is shared with it, as its members do, but
queue nothing as the team's work (`may_work_for`, below). Members and admins do.

Superusers see and change everything (that is what the admin is for).

Anything made from an object (a clone of a dataset, an experiment on a dataset, a fine-tune
of an experiment's snapshot) is never shared more widely than what it was made from: the
forms and the API ask `sharing_problem`, and a source cannot be narrowed below what was made
from it (`narrowing_problem`). Rows older than the rule may still break it, so pages ask
`visible_to` again before they name a related object.
"""

from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import models
from django.dispatch import Signal
from django.http import Http404

from accounts.models import Membership, Team, Visibility

# Sent by code that changes who sees what without saving rows one by one (a QuerySet
# update); saves and deletes of the rows the rule reads are watched already (jobs.apps).
# Open sockets ask the rule again when they hear of it.
access_changed = Signal()


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

    def with_visibility_of(self, user, *relations):
        """Annotate `<relation>_visible` (relation paths as in filter(), "__" becoming "_"):
        whether `user` may see that related object, so a list names only what its viewer
        may see without a query per row."""
        annotations = {}
        for relation in relations:
            model = self.model
            for name in relation.split("__"):
                model = model._meta.get_field(name).related_model
            visible = model._default_manager.visible_to(user).filter(pk=models.OuterRef(relation))
            annotations[f"{relation.replace('__', '_')}_visible"] = models.Exists(visible)
        return self.annotate(**annotations)


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


# --- Who may work as a team -----------------------------------------------------------------
#
# An object's team is whose work it is: the team's devices and quota run it, and the team's
# members see it. A viewer of a team (Membership.Role.VIEWER) sees and downloads what the
# team shares, exactly as a member, but may not put work on the team:
#
# - pick the team on anything new (dataset, experiment, sweep, saved network) or share
#   anything with it afterwards (`teams_for` leaves the team out; `work_problem` refuses it);
# - queue a job whose team is that team: resume one of its experiments, export one of its
#   snapshots anew (an export is its experiment's work), or evaluate one of its experiments
#   as the team's (an evaluation by a viewer is the viewer's own, private: `evaluation_reach`);
# - clone or train from the team's objects as the team's work: a clone or an experiment on a
#   team's dataset may be made, private or shared with a team the user works for.
#
# Work with no team is the user's own, and anyone may queue that.

WORKING_ROLES = (Membership.Role.MEMBER, Membership.Role.ADMIN)


def teams_for(user):
    """Teams whose name a user may put on a dataset, an experiment, a sweep, a network: the
    ones they work for (member or admin), not the ones they only view."""
    if user.is_superuser:
        return Team.objects.all()
    return Team.objects.filter(memberships__user=user, memberships__role__in=WORKING_ROLES)


def may_work_for(user, team_id):
    """Whether `user` may queue work as team `team_id`'s (None: nobody's team, their own)."""
    if team_id is None or user.is_superuser:
        return user.is_authenticated and user.is_active
    return (
        user.is_authenticated
        and user.is_active
        and Membership.objects.filter(user=user, team_id=team_id, role__in=WORKING_ROLES).exists()
    )


def work_problem(user, team_id):
    """Why `user` may not queue work as team `team_id`'s, in words; None when they may."""
    if may_work_for(user, team_id):
        return None
    team = Team.objects.filter(pk=team_id).first()
    name = f"team {team.name}" if team else "this team"
    if Membership.objects.filter(user=user, team_id=team_id, role=Membership.Role.VIEWER).exists():
        return f"You are a viewer of {name}: you may see its work but not queue work or share things with it."
    return f"You are not a member of {name}, so you may not queue work or share things with it."


def evaluation_reach(user, experiment):
    """Who sees an evaluation `user` makes of `experiment`: as many as see the experiment,
    except that one by a viewer of the experiment's team is not the team's work but their
    own, private."""
    reach = Reach.of(experiment)
    if reach.team_id is not None and not may_work_for(user, reach.team_id):
        return Reach(Visibility.PRIVATE)
    return reach


# --- Nothing made from an object is shared more widely than the object ------------------------


@dataclass(frozen=True)
class Reach:
    """Who beyond the owner sees something: everyone, one team, or nobody."""

    visibility: str
    team_id: int | None = None

    @classmethod
    def of(cls, obj):
        return cls.sharing(obj.visibility, obj.team_id)

    @classmethod
    def sharing(cls, visibility, team_id):
        if visibility == Visibility.ORGANISATION:
            return cls(Visibility.ORGANISATION)
        if visibility == Visibility.TEAM and team_id is not None:
            return cls(Visibility.TEAM, team_id)
        return cls(Visibility.PRIVATE)

    def narrowed_by(self, other):
        if Visibility.ORGANISATION in (self.visibility, other.visibility):
            return other if self.visibility == Visibility.ORGANISATION else self
        if self == other:
            return self
        return Reach(Visibility.PRIVATE)  # private, or two different teams: only the owner is left

    def allows(self, visibility, team_id):
        if visibility == Visibility.ORGANISATION:
            return self.visibility == Visibility.ORGANISATION
        if visibility == Visibility.TEAM and team_id is not None:
            return self.visibility == Visibility.ORGANISATION or self == Reach(Visibility.TEAM, team_id)
        return True  # private (a team visibility without a team shows it to nobody either)


def widest_visibility(*sources):
    """The widest Reach an object made from `sources` may have (None: a source that is gone)."""
    reach = Reach(Visibility.ORGANISATION)
    for source in sources:
        if source is not None:
            reach = reach.narrowed_by(Reach.of(source))
    return reach


def allowed_visibilities(sources):
    """The visibilities an object made from `sources` may be given (a team one only with the
    team of widest_visibility when that is a team)."""
    reach = widest_visibility(*sources)
    order = [Visibility.PRIVATE, Visibility.TEAM, Visibility.ORGANISATION]
    return order[: order.index(reach.visibility) + 1]


def sharing_problem(user, visibility, team_id, sources):
    """Why an object made from `sources` ([(source, "an experiment on it")]) may not have this
    visibility and team, in words for `user`; None when it may."""
    for source, what in sources:
        if source is None or Reach.of(source).allows(visibility, team_id):
            continue
        noun = source._meta.verbose_name
        if not can_view(user, source):
            return f"It was made from a {noun} you cannot see, so it cannot be shared more widely than that {noun}."
        return f"{noun.capitalize()} “{source}” is {_described(source)}, so {what} cannot be shared more widely."
    return None


def narrowing_problem(user, visibility, team_id, made_from_it):
    """Why an object may not take this visibility and team while `made_from_it` (objects made
    from it) are shared more widely; None when it may. Names only what `user` may see."""
    reach = Reach.sharing(visibility, team_id)
    wider = [obj for obj in made_from_it if not reach.allows(obj.visibility, obj.team_id)]
    if not wider:
        return None
    named = [f"{obj._meta.verbose_name} “{obj}”" for obj in wider if can_view(user, obj)]
    hidden = len(wider) - len(named)
    names = named + ([f"{hidden} you cannot see"] if hidden else [])
    return f"What was made from it is shared more widely than that ({', '.join(names)}); narrow or delete those first."


def _described(obj):
    if obj.visibility == Visibility.ORGANISATION:
        return "shared with the whole organisation"
    if obj.visibility == Visibility.TEAM and obj.team_id is not None:
        return f"shared with team {obj.team} only"
    return "private"
