"""The audit log: every security-relevant action, appended as an AuditEntry and never changed.

Apps call `record()` where the action happens (a download, a delete, a sharing change, a
membership change); logins, logouts and the admin's own log arrive by signal here. The
address comes from the request being served (AuditMiddleware keeps it for the calls that have
no request at hand: a form's save, the directory's sync during a login, the admin's LogEntry).
Who may read the log: superusers all of it, a team's admins that team's entries
(`AuditEntry.objects` filtered by `readable_by`).
"""

import contextvars

from django.conf import settings
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth import BACKEND_SESSION_KEY
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.contrib.contenttypes.models import ContentType
from django.db.models.signals import post_save
from django.dispatch import receiver

from accounts.models import AuditEntry, Membership, Team

Action = AuditEntry.Action

_request = contextvars.ContextVar("audit_request", default=None)

LOGIN_METHODS = {
    "accounts.oidc.DirectoryOIDCBackend": "OpenID Connect",
    "accounts.ldap.DirectoryLDAPBackend": "LDAP",
}


class AuditMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _request.set(request)
        try:
            return self.get_response(request)
        finally:
            _request.reset(token)


def client_address(request):
    """The client's address, for the audit log and the per-address login limit: the peer
    the server saw, which scripts/web.sh's uvicorn replaces by the X-Forwarded-For address
    when the peer is a trusted proxy (FORWARDED_ALLOW_IPS, default 127.0.0.1). Behind a
    proxy that is not trusted, every client has the proxy's address."""
    return (request.META.get("REMOTE_ADDR") or None) if request is not None else None


def record(action, *, user=None, obj=None, team=None, detail="", request=None, actor_name=None):
    """Append one entry. `user` is who did it (default: the request's user, when logged in);
    `obj` what it was done to, whose team the entry carries unless `team` is given."""
    request = request if request is not None else _request.get()
    if user is None and request is not None and getattr(request, "user", None) is not None:
        user = request.user if request.user.is_authenticated else None
    if team is None and obj is not None:
        team = obj if isinstance(obj, Team) else getattr(obj, "team", None)
    entry = AuditEntry(
        action=action,
        actor=user,
        actor_name=(actor_name if actor_name is not None else user.get_username() if user else "")[:150],
        team=team,
        team_name=team.name if team is not None else "",
        address=client_address(request),
        detail=detail,
    )
    if obj is not None:
        entry.content_type = ContentType.objects.get_for_model(obj.__class__)
        entry.object_id = str(obj.pk)
        entry.object_repr = str(obj)[:200]
    entry.save()
    return entry


def readable_by(user):
    """The entries `user` may read: all for a superuser, their admin teams' for a team admin."""
    if not user.is_authenticated or not user.is_active:
        return AuditEntry.objects.none()
    if user.is_superuser:
        return AuditEntry.objects.all()
    return AuditEntry.objects.filter(team__in=admin_team_ids(user))


def admin_team_ids(user):
    return Membership.objects.filter(user=user, role=Membership.Role.ADMIN).values("team_id")


def may_read_log(user):
    return user.is_authenticated and user.is_active and (user.is_superuser or admin_team_ids(user).exists())


# --- What other code reports ------------------------------------------------------------------


def sharing_changed(user, obj, before, after):
    """A visibility or team change (accounts.access.Reach before and after); nothing when equal."""
    if before == after:
        return
    record(Action.SHARING, user=user, obj=obj, detail=f"{_reach_words(before, obj)} → {_reach_words(after, obj)}")


def _reach_words(reach, obj):
    if reach.visibility == "team":
        team = Team.objects.filter(pk=reach.team_id).first()
        return f"team {team.name if team else reach.team_id}"
    return reach.visibility


def membership_changed(action, membership, *, user=None, detail="", actor_name=None):
    """A member added, removed or given another role: the entry is the team's and names the member."""
    words = detail or f"{membership.user.get_username()} as {membership.get_role_display().lower()}"
    record(action, user=user, obj=membership.team, detail=words, actor_name=actor_name)


# --- Logins, logouts and the admin's log, by signal -------------------------------------------


@receiver(user_logged_in)
def _logged_in(sender, request, user, **kwargs):
    # login() keeps the backend that let the user in in the session.
    backend = request.session.get(BACKEND_SESSION_KEY) if request is not None else getattr(user, "backend", "")
    method = LOGIN_METHODS.get(backend, "password")
    record(Action.LOGIN, user=user, obj=user, request=request, detail=method)


@receiver(user_logged_out)
def _logged_out(sender, request, user, **kwargs):
    if user is not None:
        record(Action.LOGOUT, user=user, obj=user, request=request)


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs):
    username = credentials.get("username")
    if not username:
        return  # an OpenID Connect callback: accounts.oidc reports its own failures
    # With LDAP configured, the form's password may have been meant for either.
    method = "password or LDAP" if settings.LDAP_SERVER_URI else "password"
    record(Action.LOGIN_FAILED, request=request, actor_name=username, detail=method)


def login_failed(request, method, reason):
    """A failed login that no password form saw (an OpenID Connect callback)."""
    record(Action.LOGIN_FAILED, request=request, actor_name="", detail=f"{method}: {reason}"[:1000])


ADMIN_VERBS = {ADDITION: "added", CHANGE: "changed", DELETION: "deleted"}


@receiver(post_save, sender=LogEntry)
def _admin_action(sender, instance, created, **kwargs):
    if not created:
        return
    message = instance.get_change_message()
    entry = AuditEntry(
        action=Action.ADMIN,
        actor_id=instance.user_id,
        actor_name=instance.user.get_username(),
        content_type_id=instance.content_type_id,
        object_id=instance.object_id or "",
        object_repr=instance.object_repr[:200],
        address=client_address(_request.get()),
        detail=f"{ADMIN_VERBS.get(instance.action_flag, 'changed')}" + (f": {message}" if message else ""),
    )
    model = instance.content_type.model_class() if instance.content_type_id else None
    team = _team_of(model, instance.object_id)
    if team is not None:
        entry.team, entry.team_name = team, team.name
    entry.save()


def _team_of(model, object_id):
    """The team of an object the admin touched, if it still exists and has one."""
    if model is None or not object_id:
        return None
    if model is Team:
        return Team.objects.filter(pk=object_id).first()
    if not any(field.name == "team" and field.related_model is Team for field in model._meta.get_fields()):
        return None
    obj = model._default_manager.filter(pk=object_id).select_related("team").first()
    return obj.team if obj is not None else None
