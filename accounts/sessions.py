"""Sessions end when their person leaves, and sockets end with their session.

The session store (SESSION_ENGINE; the database by default) is keyed by session, not by user,
so every login notes its session key in a UserSession row. When an account is deactivated
(the admin's change form, its "Deactivate" action, anything that saves `is_active=False`,
the directory included), `end_sessions` deletes each of them from the store at once: the
next page request is anonymous, and an open socket, which asks `session_is_current` at every
re-check (jobs.events.GroupConsumer), closes. Logging out deletes the session too, so the
sockets it opened close as well. API tokens stop for an inactive user by themselves
(accounts.tokens). One session alone ends by `end_session`: an OpenID provider that refuses
its refresh token has ended it (accounts.oidc_refresh).
"""

from importlib import import_module

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.utils.crypto import constant_time_compare

from accounts import audit
from accounts.models import ApiToken, UserSession


def session_store(session_key=None):
    return import_module(settings.SESSION_ENGINE).SessionStore(session_key)


def end_sessions(user, reason="the account was deactivated"):
    """Log `user` out everywhere, now (recorded in the audit log); the number of sessions ended."""
    keys = list(UserSession.objects.filter(user=user).values_list("session_key", flat=True))
    for key in keys:
        session_store().delete(key)
    UserSession.objects.filter(user=user, session_key__in=keys).delete()
    if keys:
        audit.record(audit.Action.SESSIONS_ENDED, obj=user, detail=f"{len(keys)} ended: {reason}")
    return len(keys)


def end_session(user_session):
    """Log this one session out now: its next page is anonymous, and its sockets close (the
    row's deletion tells them to check again). The caller writes the audit entry that says why."""
    session_store().delete(user_session.session_key)
    UserSession.objects.filter(pk=user_session.pk).delete()


def session_is_live(user_session):
    """Whether the session of this row still logs its user in: False once it expired or was
    deleted from the store (a row outlives an expired session until that user's next login)."""
    data = session_store(user_session.session_key).load()  # {} for a session that is gone or expired
    return str(data.get(SESSION_KEY)) == str(user_session.user_id)


def session_is_current(scope):
    """Whether the browser session a socket was opened with still logs in the socket's user:
    False once it was logged out, ended by `end_sessions`, expired or taken by a password
    change. A socket opened with an API token has no session: it lasts while its token is
    neither revoked nor expired."""
    if scope.get("auth") == "token":
        token = ApiToken.objects.filter(pk=scope.get("token_id")).first()
        return token is not None and not token.expired
    user, session = scope.get("user"), scope.get("session")
    key = getattr(session, "session_key", None)
    if user is None or not key:
        return False
    data = session_store(key).load()  # {} for a session that is gone or expired
    if str(data.get(SESSION_KEY)) != str(user.pk):
        return False
    stored_hash = data.get(HASH_SESSION_KEY)
    fresh = get_user_model()._default_manager.filter(pk=user.pk).first()
    if fresh is None:
        return False
    return stored_hash is None or constant_time_compare(stored_hash, fresh.get_session_auth_hash())


# --- Kept in step by signal -------------------------------------------------------------------


@receiver(user_logged_in)
def _note_session(sender, request, user, **kwargs):
    session = getattr(request, "session", None)
    if session is None:
        return
    if session.session_key is None:
        session.save()
    # The rows of sessions that expired or were cleared since go, so the table stays small.
    for key in UserSession.objects.filter(user=user).values_list("session_key", flat=True):
        if not session_store().exists(key):
            UserSession.objects.filter(session_key=key).delete()
    UserSession.objects.update_or_create(session_key=session.session_key, defaults={"user": user})


@receiver(user_logged_out)
def _forget_session(sender, request, user, **kwargs):
    session = getattr(request, "session", None)
    if session is not None and session.session_key:
        UserSession.objects.filter(session_key=session.session_key).delete()


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def _end_sessions_of_leavers(sender, instance, **kwargs):
    if not instance.is_active:
        end_sessions(instance)
