"""Teams pages: the teams a user is in, a team's members, what it shares and what it stores.

A team's admins (and superusers) add and remove members and change roles (viewer: sees what
the team shares but queues no work as the team's; member; admin); anyone may leave,
but the last admin of a team with other members names another admin first. What the
directory manages is edited there: a membership from the directory (and, in a team from the
directory, adding members) is not offered here, since the next login would undo it.
"""

from django import forms
from django.apps import apps
from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.db.models import Sum
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from accounts import audit
from accounts.models import Membership, Source, Team, User

Action = audit.Action
Role = Membership.Role

ROLES_HELP = (
    "Viewers see and download what the team shares; members also run work as the team's and share "
    "with it; admins also manage its members."
)


# --- Who may do what ----------------------------------------------------------------------


def may_create_teams(user):
    return user.is_superuser or settings.TEAM_CREATION == "everyone"


def may_manage(user, team):
    return user.is_superuser or team.memberships.filter(user=user, role=Role.ADMIN).exists()


def directory_managed(membership):
    return membership.source != Source.LOCAL


def last_admin_problem(membership, *, successor=None):
    """Why `membership` may not stop being an admin (leave or be demoted), or None."""
    if membership.role != Role.ADMIN:
        return None
    others = membership.team.memberships.exclude(pk=membership.pk)
    if not others.exists() or others.filter(role=Role.ADMIN).exists() or successor is not None:
        return None
    return "You are this team's last admin: name another admin before you leave."


# --- Forms ----------------------------------------------------------------------------------


class TeamForm(forms.ModelForm):
    class Meta:
        model = Team
        fields = ["name"]


class AddMemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER, help_text=ROLES_HELP)

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        self.team = team

    def clean_username(self):
        username = self.cleaned_data["username"].strip()
        user = User.objects.filter(username__iexact=username, is_active=True).first()
        if user is None:
            raise forms.ValidationError(f"There is no active user called “{username}”.")
        if self.team.memberships.filter(user=user).exists():
            raise forms.ValidationError(f"{user.username} is already in this team.")
        return user


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class LeaveForm(forms.Form):
    successor = forms.ModelChoiceField(
        queryset=Membership.objects.none(), required=False, label="New admin", empty_label="— nobody —"
    )

    def __init__(self, *args, membership, **kwargs):
        super().__init__(*args, **kwargs)
        self.membership = membership
        # Only a local membership can be made admin here: the directory would undo it otherwise.
        self.fields["successor"].queryset = (
            membership.team.memberships.exclude(pk=membership.pk).filter(source=Source.LOCAL).select_related("user")
        )
        self.fields["successor"].label_from_instance = lambda m: m.user.username

    def clean(self):
        cleaned = super().clean()
        problem = last_admin_problem(self.membership, successor=cleaned.get("successor"))
        if problem:
            self.add_error("successor", problem)
        return cleaned


# --- Pages ----------------------------------------------------------------------------------


def team_list(request):
    form = None
    if may_create_teams(request.user):
        form = TeamForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            with transaction.atomic():
                team = form.save()
                membership = Membership.objects.create(user=request.user, team=team, role=Role.ADMIN)
                audit.record(Action.TEAM_CREATED, user=request.user, obj=team, request=request)
                audit.membership_changed(Action.MEMBER_ADDED, membership, user=request.user)
            messages.success(request, f"Team “{team.name}” was created; you are its admin.")
            return redirect("team-detail", team.pk)
    elif request.method == "POST":
        messages.error(request, "Only organisation administrators create teams here.")
        return redirect("team-list")
    memberships = request.user.memberships.select_related("team").order_by("team__name")
    ctx = {"memberships": memberships, "form": form}
    return render(request, "accounts/teams.html", ctx)


def _team_for(request, pk):
    """The team if `request.user` is in it (or is a superuser); 404 otherwise, as for anything hidden."""
    team = get_object_or_404(Team, pk=pk)
    if not (request.user.is_superuser or team.memberships.filter(user=request.user).exists()):
        raise Http404("No team matches the given query.")
    return team


def team_detail(request, pk, add_form=None, leave_form=None):
    team = _team_for(request, pk)
    manage = may_manage(request.user, team)
    mine = team.memberships.filter(user=request.user).first()
    ctx = {
        "team": team,
        "memberships": team.memberships.select_related("user").order_by("user__username"),
        "mine": mine,
        "manage": manage,
        "from_directory": team.source != Source.LOCAL,
        "add_form": add_form or (AddMemberForm(team=team) if manage and team.source == Source.LOCAL else None),
        "leave_form": leave_form or (LeaveForm(membership=mine) if mine and not directory_managed(mine) else None),
        "roles": Role.choices,
        "roles_help": ROLES_HELP,
        **team_contents(team, request.user),
    }
    return render(request, "accounts/team_detail.html", ctx, status=400 if (add_form or leave_form) else 200)


def team_contents(team, user):
    """The team's datasets and experiments that `user` may see, and what the team stores.
    The models are looked up by name: accounts sits below the apps that own them."""
    Dataset = apps.get_model("datasets", "Dataset")
    Experiment = apps.get_model("training", "Experiment")
    datasets = Dataset.objects.filter(team=team)
    experiments = Experiment.objects.filter(team=team)
    stored = (datasets.aggregate(total=Sum("stored_bytes"))["total"] or 0) + sum(
        experiments.aggregate(total=Sum(f"{relation}__size_bytes"))["total"] or 0
        for relation in ("snapshots", "exports")
    )
    return {
        "datasets": datasets.visible_to(user).select_related("owner"),
        "experiments": experiments.visible_to(user).select_related("owner"),
        "usage": {"datasets": datasets.count(), "experiments": experiments.count(), "bytes": stored},
    }


def _managed_team(request, pk):
    team = _team_for(request, pk)
    if not may_manage(request.user, team):
        messages.error(request, "Only this team's admins change its members.")
        return None
    return team


@require_POST
def member_add(request, pk):
    team = _managed_team(request, pk)
    if team is None:
        return redirect("team-detail", pk)
    if team.source != Source.LOCAL:
        messages.error(request, "This team's members come from the directory: add them to its group there.")
        return redirect(team_url(team))
    form = AddMemberForm(request.POST, team=team)
    if not form.is_valid():
        return team_detail(request, pk, add_form=form)
    membership = Membership.objects.create(
        user=form.cleaned_data["username"], team=team, role=form.cleaned_data["role"]
    )
    audit.membership_changed(Action.MEMBER_ADDED, membership, user=request.user)
    messages.success(request, f"{membership.user.username} was added as {membership.get_role_display().lower()}.")
    return redirect(team_url(team))


@require_POST
def member_role(request, pk, membership_pk):
    team = _managed_team(request, pk)
    if team is None:
        return redirect("team-detail", pk)
    membership = get_object_or_404(team.memberships.select_related("user"), pk=membership_pk)
    form = RoleForm(request.POST)
    if directory_managed(membership):
        messages.error(request, "This membership comes from the directory: change the role there.")
    elif not form.is_valid():
        messages.error(request, "Choose viewer, member or admin.")
    elif form.cleaned_data["role"] != membership.role:
        if form.cleaned_data["role"] != Role.ADMIN and last_admin_problem(membership):
            messages.error(request, "The team needs another admin before this one stops being an admin.")
        else:
            membership.role = form.cleaned_data["role"]
            membership.save(update_fields=["role"])
            audit.membership_changed(Action.ROLE_CHANGED, membership, user=request.user)
            messages.success(request, f"{membership.user.username} is now {membership.get_role_display().lower()}.")
    return redirect(team_url(team))


@require_POST
def member_remove(request, pk, membership_pk):
    team = _managed_team(request, pk)
    if team is None:
        return redirect("team-detail", pk)
    membership = get_object_or_404(team.memberships.select_related("user", "team"), pk=membership_pk)
    if directory_managed(membership):
        messages.error(request, "This membership comes from the directory: remove it there.")
    elif last_admin_problem(membership):
        messages.error(request, "The team needs another admin before its last one is removed.")
    else:
        audit.membership_changed(Action.MEMBER_REMOVED, membership, user=request.user)
        membership.delete()
        messages.success(request, f"{membership.user.username} was removed from the team.")
    return redirect(team_url(team))


@require_POST
def team_leave(request, pk):
    team = _team_for(request, pk)
    mine = team.memberships.filter(user=request.user).select_related("user", "team").first()
    if mine is None:
        messages.error(request, "You are not in this team.")
        return redirect(team_url(team))
    if directory_managed(mine):
        messages.error(request, "Your place in this team comes from the directory: the next login would bring it back.")
        return redirect(team_url(team))
    form = LeaveForm(request.POST, membership=mine)
    if not form.is_valid():
        return team_detail(request, pk, leave_form=form)
    with transaction.atomic():
        successor = form.cleaned_data["successor"]
        if successor is not None and successor.role != Role.ADMIN:
            successor.role = Role.ADMIN
            successor.save(update_fields=["role"])
            audit.membership_changed(Action.ROLE_CHANGED, successor, user=request.user)
        audit.membership_changed(Action.MEMBER_REMOVED, mine, user=request.user, detail=f"{request.user.username} left")
        mine.delete()
    messages.success(request, f"You left team “{team.name}”.")
    return redirect("team-list")


def team_url(team):
    return reverse("team-detail", args=[team.pk])
