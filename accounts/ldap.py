"""LDAP sign-in (django-auth-ldap): a search bind finds the user, their password is checked by
binding as them, and their groups' names become team memberships (accounts.directory). The
account is marked as the directory's, so accounts.ldap_sync looks it up between logins too.

Configured by the plain LDAP_* settings; without LDAP_SERVER_URI the backend answers no one.
"""

import logging

import ldap
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django_auth_ldap.backend import LDAPBackend
from django_auth_ldap.config import GroupOfNamesType, GroupOfUniqueNamesType, LDAPSearch, LDAPSettings, PosixGroupType

from accounts.backends import refuse_if_locked
from accounts.directory import sync_teams
from accounts.models import Source

log = logging.getLogger(__name__)

GROUP_TYPES = {
    "groupOfNames": GroupOfNamesType,
    "groupOfUniqueNames": GroupOfUniqueNamesType,
    "posixGroup": PosixGroupType,
}


def configured():
    return bool(settings.LDAP_SERVER_URI)


def ldap_settings():
    """django-auth-ldap's settings object, made from the platform's LDAP_* settings."""
    s = LDAPSettings()
    s.SERVER_URI = settings.LDAP_SERVER_URI
    s.BIND_DN = settings.LDAP_BIND_DN
    s.BIND_PASSWORD = settings.LDAP_BIND_PASSWORD
    s.START_TLS = settings.LDAP_START_TLS
    s.USER_SEARCH = LDAPSearch(settings.LDAP_USER_SEARCH_BASE, ldap.SCOPE_SUBTREE, settings.LDAP_USER_FILTER)
    s.USER_ATTR_MAP = {"first_name": "givenName", "last_name": "sn", "email": "mail"}
    s.CONNECTION_OPTIONS = {ldap.OPT_NETWORK_TIMEOUT: settings.LDAP_TIMEOUT, ldap.OPT_TIMEOUT: settings.LDAP_TIMEOUT}
    if settings.LDAP_GROUP_SEARCH_BASE:
        s.GROUP_SEARCH = LDAPSearch(settings.LDAP_GROUP_SEARCH_BASE, ldap.SCOPE_SUBTREE, settings.LDAP_GROUP_FILTER)
        s.GROUP_TYPE = GROUP_TYPES[settings.LDAP_GROUP_TYPE](name_attr="cn")
    return s


class DirectoryLDAPBackend(LDAPBackend):
    @property
    def settings(self):
        if self._settings is None:
            self._settings = ldap_settings()
        return self._settings

    def authenticate(self, request, username=None, password=None, **kwargs):
        if not configured() or username is None:
            return None
        refuse_if_locked(request, username)
        return super().authenticate(request, username=username, password=password, **kwargs)

    def authenticate_ldap_user(self, ldap_user, password):
        user = super().authenticate_ldap_user(ldap_user, password)
        if user is not None and user.is_superuser:
            # Superusers are the local break-glass accounts, never a directory entry's.
            log.warning("LDAP login as superuser %r refused", user.username)
            raise PermissionDenied("A directory account cannot log in as a local superuser.")
        if user is not None:
            user.note_source(Source.LDAP)
            groups = ldap_user.group_names if self.settings.GROUP_SEARCH else ()
            sync_teams(
                user,
                groups,
                source=Source.LDAP,
                admin_suffix=settings.LDAP_ADMIN_SUFFIX,
                viewer_suffix=settings.LDAP_VIEWER_SUFFIX,
            )
        return user
