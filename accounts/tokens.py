"""API tokens: several per user, named, optionally read-only and expiring.

The secret is shown once, when it is made; the database keeps its sha256 only, so a copy of
the database lets nobody call the API. Requests send it as DRF's did: `Authorization: Token
<secret>`. A token stops working at once when it is revoked (its row is deleted), when it
expires, and when its user is deactivated.
"""

import hashlib
import secrets
from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions, permissions

from accounts import audit
from accounts.models import ApiToken

PREFIX_LENGTH = 8
# last_used is written at most this often per token, so a busy script does not turn every
# read into a write.
LAST_USED_EVERY = timedelta(seconds=60)


def digest(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


def create(user, name, *, read_only=False, expires=None, request=None):
    """A new token and its secret, which exists nowhere else after this call."""
    secret = secrets.token_urlsafe(30)
    token = ApiToken.objects.create(
        user=user, name=name, prefix=secret[:PREFIX_LENGTH], digest=digest(secret), read_only=read_only, expires=expires
    )
    audit.record(audit.Action.TOKEN_CREATED, user=user, obj=token, request=request, detail=describe(token))
    return token, secret


def revoke(token, *, user, request=None):
    audit.record(audit.Action.TOKEN_REVOKED, user=user, obj=token, request=request, detail=describe(token))
    token.delete()


def describe(token):
    words = ["read-only" if token.read_only else "read and write"]
    words.append(f"expires {token.expires:%Y-%m-%d}" if token.expires else "never expires")
    if token.user_id:
        words.append(f"of {token.user.get_username()}")
    return ", ".join(words)


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's header parsing, with the secret looked up by its digest among ApiTokens."""

    def authenticate_credentials(self, key):
        token = ApiToken.objects.select_related("user").filter(digest=digest(key)).first()
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if token.expired:
            raise exceptions.AuthenticationFailed("This token has expired; make a new one on /accounts/token/.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        now = timezone.now()
        if token.last_used is None or now - token.last_used >= LAST_USED_EVERY:
            ApiToken.objects.filter(pk=token.pk).update(last_used=now)
            token.last_used = now
        return token.user, token


class ReadOnlyToken(permissions.BasePermission):
    """A read-only token may only read: GET, HEAD and OPTIONS."""

    message = "This API token is read-only: it may only read (GET), not change anything."

    def has_permission(self, request, view):
        token = request.auth
        return not (isinstance(token, ApiToken) and token.read_only and request.method not in permissions.SAFE_METHODS)
