"""Refused passwords, counted per account and per address, lock further tries for a while.

Every password backend asks `blocked()` first (accounts.backends), so the login page, the
admin's login and any later password form are covered alike; the login form shows the
reason next to the fields. The count lives in the database (FailedLogin): shared by every
web process and unaffected by Redis being down, where a local-memory cache would count per
process and Redis would lose the lock with the cache.
"""

import math
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.dispatch import receiver
from django.utils import timezone

from accounts.audit import client_address
from accounts.models import FailedLogin


def _window_start():
    return timezone.now() - timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS)


def _lock_message(failures, limit, whose):
    """The message when `failures` (this window's) reach `limit`, or None."""
    if failures.count() < limit:
        return None
    # The lock lifts when the oldest of the latest `limit` failures leaves the window.
    oldest = failures.order_by("-created").values_list("created", flat=True)[limit - 1]
    seconds = (oldest + timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS) - timezone.now()).total_seconds()
    minutes = max(1, math.ceil(seconds / 60))
    unit = "minute" if minutes == 1 else "minutes"
    return f"Too many failed attempts {whose}; try again in {minutes} {unit}."


def blocked(request, username):
    """Why further tries are refused now, in the user's words, or None."""
    recent = FailedLogin.objects.filter(created__gte=_window_start())
    message = None
    if username:
        message = _lock_message(
            recent.filter(username__iexact=username), settings.LOGIN_FAILURES_PER_ACCOUNT, "for this account"
        )
    address = client_address(request)
    if not message and address:
        message = _lock_message(
            recent.filter(address=address), settings.LOGIN_FAILURES_PER_ADDRESS, "from your address"
        )
    return message


@receiver(user_login_failed)
def count_failure(sender, credentials, request=None, **kwargs):
    username = credentials.get("username")
    if not username:
        # Not a password (an OpenID Connect callback that failed): nothing to guess at.
        return
    if blocked(request, username):
        # A try refused by the lock itself does not lengthen it.
        return
    FailedLogin.objects.filter(created__lt=_window_start()).delete()
    FailedLogin.objects.create(username=username[:150], address=client_address(request))


@receiver(user_logged_in)
def forget_failures(sender, user, request=None, **kwargs):
    # The account's own count starts again; the address's stays, or one good account
    # would open the door to guessing others from the same address.
    FailedLogin.objects.filter(username__iexact=user.get_username()).delete()
