"""The platform's own passwords: rate-limited, and switched off by LOCAL_LOGIN=0 for all but
superusers, whose password stays as the way in when the directory is down or misconfigured.
"""

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied

from accounts import ratelimit


def refuse_if_locked(request, username):
    # PermissionDenied stops Django's authenticate() at once: no later backend tries it.
    if username and ratelimit.blocked(request, username):
        raise PermissionDenied


class PasswordBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None or password is None:
            return None
        refuse_if_locked(request, username)
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None and not (settings.LOCAL_LOGIN or user.is_superuser):
            return None
        return user
