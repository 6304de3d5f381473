"""Leavers lose access without logging in again: every LDAP account is looked up in the
directory between logins (`manage.py sync_directory`, the Procfile's `directory` process).

A login keeps an account in step with the directory, but a person who left never logs in
again. So each active, non-superuser account that LDAP logged in (User.source) is searched
for as a login searches (LDAP_USER_SEARCH_BASE, LDAP_USER_FILTER, the LDAP_BIND_DN bind):
one the directory no longer has is deactivated, which ends its sessions, tokens and sockets
at once (accounts.sessions); one it still has gets its memberships from its groups now, so
leaving a group takes effect without a login.

The whole directory is read before anything changes. When it cannot be read (down, the
bind refused, a search refused) or finds none of several accounts (a wrong search base or
filter, a bind account that may read nothing), `DirectoryUnreadable` is raised and nothing
changes: a directory outage must never look like everyone leaving.
"""

import logging
from dataclasses import dataclass

import ldap
from django.conf import settings
from django.db import transaction

from accounts import audit
from accounts.directory import actor_name, sync_teams
from accounts.ldap import ldap_settings
from accounts.models import Source, User

log = logging.getLogger(__name__)


class DirectoryUnreadable(Exception):
    """The directory could not be read, so nothing was changed; the message says why."""


@dataclass
class Summary:
    checked: int = 0
    deactivated: int = 0
    memberships_changed: int = 0

    def __str__(self):
        return (
            f"{self.checked} LDAP account(s) checked, {self.deactivated} deactivated (no longer in the directory), "
            f"{self.memberships_changed} team membership(s) changed"
        )


@dataclass(frozen=True)
class Entry:
    """A user's directory entry in the shape django-auth-ldap's group types read (their
    `user_groups(ldap_user, search)` uses `dn`, `attrs` and a bound `connection`)."""

    dn: str
    attrs: dict
    connection: object


def accounts_to_check():
    return User.objects.filter(source=Source.LDAP, is_active=True, is_superuser=False).order_by("pk")


def sync_directory():
    """Deactivate the LDAP accounts the directory no longer has and refresh the others'
    memberships from their groups; a Summary. Raises DirectoryUnreadable, changing nothing."""
    accounts = list(accounts_to_check())
    found = read_directory(ldap_settings(), accounts)
    if len(accounts) > 1 and not found:
        raise DirectoryUnreadable(
            f"The directory at {settings.LDAP_SERVER_URI} found none of the {len(accounts)} LDAP accounts; "
            "check LDAP_USER_SEARCH_BASE, LDAP_USER_FILTER and what LDAP_BIND_DN may read. Nothing was changed."
        )
    summary = Summary(checked=len(accounts))
    for user in accounts:
        if user.pk in found:
            summary.memberships_changed += refresh_teams(user, found[user.pk])
        else:
            deactivate_leaver(user)
            summary.deactivated += 1
    return summary


def read_directory(config, accounts):
    """{account pk: its group names} for the accounts the directory has, over one
    connection bound as LDAP_BIND_DN; DirectoryUnreadable at the first error."""
    connection = None
    try:
        connection = connect(config)
        found = {}
        for user in accounts:
            entry = find(connection, config, user.username)
            if entry is not None:
                found[user.pk] = group_names(config, entry)
        return found
    except ldap.LDAPError as error:
        raise DirectoryUnreadable(unreadable_words(error)) from error
    finally:
        if connection is not None:
            close(connection)


def connect(config):
    # As django-auth-ldap connects for a login (_LDAPUser._get_connection, _bind), but
    # raising every error: its own lookups log them and answer "no such user".
    connection = ldap.initialize(config.SERVER_URI)
    for option, value in config.CONNECTION_OPTIONS.items():
        connection.set_option(option, value)
    if config.START_TLS:
        connection.start_tls_s()
    connection.simple_bind_s(config.BIND_DN, config.BIND_PASSWORD)
    return connection


def close(connection):
    try:
        connection.unbind_s()
    except ldap.LDAPError:
        pass  # a connection that already broke: the error that broke it is the one to report


def find(connection, config, username):
    """The user's entry, or None when the directory has none, as a login decides: a search
    that finds several is no match either (django-auth-ldap refuses that login)."""
    results = config.USER_SEARCH.execute(connection, {"user": username})
    if len(results) > 1:
        log.warning("LDAP: %d entries match %r; treated as not in the directory", len(results), username)
    if len(results) != 1:
        return None
    dn, attrs = results[0]
    return Entry(dn, attrs, connection)


def group_names(config, entry):
    """The names of the user's groups, as django-auth-ldap gives a login (`group_names`)."""
    if config.GROUP_SEARCH is None:
        return set()
    infos = config.GROUP_TYPE.user_groups(entry, config.GROUP_SEARCH)
    return {name for info in infos if (name := config.GROUP_TYPE.group_name_from_info(info)) is not None}


def unreadable_words(error):
    # python-ldap's errors carry {"desc": ..., "info": ...}.
    detail = error.args[0] if error.args and isinstance(error.args[0], dict) else {}
    reason = detail.get("desc") or type(error).__name__
    if detail.get("info"):
        reason += f" ({detail['info']})"
    hint = " Check LDAP_BIND_DN and LDAP_BIND_PASSWORD." if isinstance(error, ldap.INVALID_CREDENTIALS) else ""
    return f"Could not read the directory at {settings.LDAP_SERVER_URI}: {reason}.{hint} Nothing was changed."


@transaction.atomic
def deactivate_leaver(user):
    audit.record(
        audit.Action.LEFT_DIRECTORY,
        obj=user,
        actor_name=actor_name(Source.LDAP),
        detail="no longer in the LDAP directory: account deactivated",
    )
    user.is_active = False
    user.save(update_fields=["is_active"])  # accounts.sessions ends its sessions on this save
    log.info("LDAP: %s is no longer in the directory: deactivated", user.username)


def refresh_teams(user, groups):
    return sync_teams(
        user,
        groups,
        source=Source.LDAP,
        admin_suffix=settings.LDAP_ADMIN_SUFFIX,
        viewer_suffix=settings.LDAP_VIEWER_SUFFIX,
    )
