"""A leaver's work handed to a colleague: every object under the access rule that the leaver
owns (datasets, experiments, sweeps, saved networks, evaluations: whatever is `Owned`) gets
a new owner. Team and visibility stay as they were, so who else sees it does not change; the
recipient now sees and changes it as its owner. Each object's change, and the whole, go to
the audit log. An organisation admin does it from the admin's user list ("Hand over work").
"""

from django.apps import apps
from django.db import transaction

from accounts import audit
from accounts.access import Owned, access_changed


class HandoverRefused(Exception):
    pass


def owned_models():
    """Every concrete model under the rule, looked up at run time: accounts sits below the
    apps that define them."""
    return [model for model in apps.get_models() if issubclass(model, Owned)]


def handover_problem(leaver, recipient):
    """Why `leaver`'s work may not go to `recipient`, in words; None when it may."""
    if recipient is None:
        return "Choose who receives the work."
    if recipient.pk == leaver.pk:
        return f"{leaver.username} cannot hand work over to themselves."
    if not recipient.is_active:
        return f"{recipient.username} is inactive: choose an active user to receive the work."
    return None


def owned_by(user):
    """{verbose name plural: count} of what `user` owns, for the form to show."""
    counts = {}
    for model in owned_models():
        count = model._default_manager.filter(owner=user).count()
        if count:
            counts[str(model._meta.verbose_name_plural)] = count
    return counts


@transaction.atomic
def hand_over(leaver, recipient, *, by=None):
    """Make `recipient` the owner of everything `leaver` owns; {verbose name plural: count}.
    Raises HandoverRefused with the reason (handover_problem) instead."""
    problem = handover_problem(leaver, recipient)
    if problem:
        raise HandoverRefused(problem)
    moved = {}
    for model in owned_models():
        objects = list(
            model._default_manager.filter(owner=leaver).select_for_update(of=("self",)).select_related("team")
        )
        if not objects:
            continue
        for obj in objects:
            # One entry per object, so each team's admins read what changed in their team.
            audit.record(
                audit.Action.HANDED_OVER,
                user=by,
                obj=obj,
                detail=f"owner {leaver.username} → {recipient.username}",
            )
        model._default_manager.filter(pk__in=[obj.pk for obj in objects]).update(owner=recipient)
        access_changed.send(sender=model)
        moved[str(model._meta.verbose_name_plural)] = len(objects)
    summary = ", ".join(f"{count} {name}" for name, count in moved.items()) or "nothing"
    audit.record(audit.Action.HANDED_OVER, user=by, obj=leaver, detail=f"to {recipient.username}: {summary}")
    return moved
