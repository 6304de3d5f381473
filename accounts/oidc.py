"""OpenID Connect sign-in (mozilla-django-oidc): the authorization code flow with PKCE, state
and nonce, the ID token's signature checked against the provider's published keys, and its
audience and issuer checked too (the library leaves those to the project). The endpoints
come from the provider's discovery document, read on first use; the teams claim becomes team
memberships (accounts.directory).

Log out ends a session an OpenID login made at the provider as well (RP-initiated logout:
the provider's end_session_endpoint, with the login's ID token as the hint), and the provider
sends the browser back to the login page; OIDC_LOGOUT_AT_PROVIDER=0 logs out of the platform only.

The provider's refresh token, when it gives one, is kept for the session the login made
(OIDCRefreshToken, sealed: accounts.sealed), so that session keeps answering to the provider
between logins: accounts.oidc_refresh ends it when the provider refuses the token and
follows the person's groups there.

Configured by OIDC_ISSUER and OIDC_RP_CLIENT_ID; without them the views answer 404 and the
backend answers no one.
"""

import logging
import time
from dataclasses import dataclass
from urllib.parse import urlencode

import jwt
import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.urls import reverse
from django.utils.decorators import method_decorator
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView, OIDCLogoutView

from accounts import audit
from accounts.directory import sync_teams
from accounts.models import OIDCRefreshToken, Source, UserSession

log = logging.getLogger(__name__)

# A discovery document is re-read after this long, so a provider's moved endpoint is found
# without a restart; the signing keys themselves are fetched at every login.
DISCOVERY_TTL = 3600
_discovered = {}  # issuer -> (time read, document)


class ProviderUnavailable(Exception):
    pass


def configured():
    return bool(settings.OIDC_ISSUER and settings.OIDC_RP_CLIENT_ID)


def discovery():
    issuer = settings.OIDC_ISSUER.rstrip("/")
    read_at, document = _discovered.get(issuer, (0, None))
    if document is None or time.monotonic() - read_at > DISCOVERY_TTL:
        url = f"{issuer}/.well-known/openid-configuration"
        try:
            response = requests.get(url, timeout=settings.OIDC_TIMEOUT, verify=settings.OIDC_VERIFY_SSL)
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise ProviderUnavailable(f"{url}: {exc}") from exc
        # The discovery spec's own check: a document naming another issuer is not this one's.
        if str(document.get("issuer", "")).rstrip("/") != issuer:
            raise ProviderUnavailable(f"{url} names the issuer {document.get('issuer')!r}, not {issuer!r}")
        _discovered[issuer] = (time.monotonic(), document)
    return document


def endpoint(setting, key):
    """An explicit OIDC_OP_* setting, or else the discovery document's entry."""
    explicit = getattr(settings, setting, "")
    if explicit:
        return explicit
    value = discovery().get(key)
    if not value:
        raise ProviderUnavailable(f"the discovery document of {settings.OIDC_ISSUER} has no {key}")
    return value


def username_from(claims):
    for claim in (settings.OIDC_USERNAME_CLAIM, "email"):
        value = claims.get(claim)
        if isinstance(value, str) and 0 < len(value.strip()) <= 150:
            return value.strip()
    return None


def groups_from(claims):
    value = claims.get(settings.OIDC_TEAMS_CLAIM) or []
    return [value] if isinstance(value, str) else [str(group) for group in value]


def sync_teams_from_claims(user, claims):
    """The user's OpenID Connect memberships made those the teams claim names, as at a login
    and at each refresh between logins (accounts.oidc_refresh); how many changed."""
    return sync_teams(
        user,
        groups_from(claims),
        source=Source.OIDC,
        admin_suffix=settings.OIDC_ADMIN_SUFFIX,
        viewer_suffix=settings.OIDC_VIEWER_SUFFIX,
    )


@dataclass(frozen=True)
class Grant:
    """What a login's token response leaves for its session: the subject it was for and the
    refresh token, if the provider gave one (None: the session is not checked between logins)."""

    subject: str
    refresh_token: str | None


def keep_refresh_token(session_key, grant):
    """Keep the login's refresh token beside the session's UserSession row, sealed, in place
    of any an earlier login of the same session kept; a login that gave none leaves none."""
    user_session = UserSession.objects.filter(session_key=session_key).first()
    if user_session is None:
        return
    if grant is None or not grant.refresh_token:
        OIDCRefreshToken.objects.filter(session=user_session).delete()
        return
    kept = OIDCRefreshToken.objects.filter(session=user_session).first() or OIDCRefreshToken(session=user_session)
    kept.subject, kept.token, kept.refreshed = grant.subject, grant.refresh_token, None
    kept.save()


class DirectoryOIDCBackend(OIDCAuthenticationBackend):
    def __init__(self, *args, **kwargs):
        # The parent reads every endpoint here, and Django builds each backend for every
        # login, passwords included: the provider is asked only when a callback needs it.
        self.UserModel = get_user_model()
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None

    OIDC_RP_CLIENT_ID = property(lambda self: settings.OIDC_RP_CLIENT_ID)
    OIDC_RP_CLIENT_SECRET = property(lambda self: settings.OIDC_RP_CLIENT_SECRET)
    OIDC_OP_TOKEN_ENDPOINT = property(lambda self: endpoint("OIDC_OP_TOKEN_ENDPOINT", "token_endpoint"))
    OIDC_OP_USER_ENDPOINT = property(lambda self: endpoint("OIDC_OP_USER_ENDPOINT", "userinfo_endpoint"))
    OIDC_OP_JWKS_ENDPOINT = property(lambda self: endpoint("OIDC_OP_JWKS_ENDPOINT", "jwks_uri"))

    def authenticate(self, request, **kwargs):
        # Only the callback view passes a nonce; a password login is none of this backend's.
        if not configured() or "nonce" not in kwargs:
            return None
        return super().authenticate(request, **kwargs)

    def retrieve_matching_jwk(self, token):
        # The parent insists on a key id in the token's header; a provider with one key may
        # leave it out (the spec allows that), and then that key is the one.
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise SuspiciousOperation(f"ID token refused: {exc}") from exc
        response = requests.get(
            self.OIDC_OP_JWKS_ENDPOINT, timeout=settings.OIDC_TIMEOUT, verify=settings.OIDC_VERIFY_SSL
        )
        response.raise_for_status()
        keys = [
            key
            for key in response.json().get("keys", [])
            if key.get("use", "sig") == "sig"
            and key.get("alg", header.get("alg")) == header.get("alg")
            and ("kid" not in header or key.get("kid") == header["kid"])
        ]
        if len(keys) != 1:
            raise SuspiciousOperation(f"ID token refused: {len(keys)} of the provider's keys match its header")
        return jwt.PyJWK(keys[0])

    def _verify_jws(self, payload, key):
        try:
            alg = jwt.get_unverified_header(payload).get("alg")
        except jwt.InvalidTokenError as exc:
            raise SuspiciousOperation(f"ID token refused: {exc}") from exc
        if alg != self.OIDC_RP_SIGN_ALGO:
            raise SuspiciousOperation(f"ID token refused: signed with {alg!r}, not {self.OIDC_RP_SIGN_ALGO!r}")
        try:
            return jwt.decode(
                payload,
                key,
                algorithms=[alg],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=settings.OIDC_ISSUER.rstrip("/"),
                options={"require": ["iss", "aud", "sub", "exp", "iat"]},
            )
        except jwt.InvalidTokenError as exc:
            raise SuspiciousOperation(f"ID token refused: {exc}") from exc

    def get_token(self, payload):
        tokens = super().get_token(payload)
        refresh_token = tokens.get("refresh_token")
        # For the session this login makes (LoginCallback.login_success), never the cookie.
        self.refresh_token = refresh_token if isinstance(refresh_token, str) and refresh_token else None
        return tokens

    def get_userinfo(self, access_token, id_token, payload):
        # The ID token's claims, completed by the userinfo endpoint, which answers only
        # for the same subject (OpenID Connect Core 5.3.2).
        claims = dict(payload)
        if settings.OIDC_OP_USER_ENDPOINT or discovery().get("userinfo_endpoint"):
            userinfo = super().get_userinfo(access_token, id_token, payload)
            if userinfo.get("sub") != payload.get("sub"):
                raise SuspiciousOperation("the userinfo endpoint answered for another subject")
            claims.update(userinfo)
        self.claims = claims
        return claims

    def verify_claims(self, claims):
        return username_from(claims) is not None

    def filter_users_by_claims(self, claims):
        users = self.UserModel.objects.filter(username__iexact=username_from(claims))
        if any(user.is_superuser for user in users):
            # Superusers are the local break-glass accounts: a directory entry of the same
            # name must not become one. PermissionDenied stops authenticate() for good.
            log.warning("OpenID Connect login as superuser %r refused", username_from(claims))
            raise PermissionDenied("A directory account cannot log in as a local superuser.")
        return users

    def create_user(self, claims):
        user = self.UserModel(username=username_from(claims))
        user.set_unusable_password()
        return self.update_user(user, claims)

    def update_user(self, user, claims):
        user.source = Source.OIDC
        user.email = claims.get("email") or user.email
        user.first_name = (claims.get("given_name") or user.first_name)[:150]
        user.last_name = (claims.get("family_name") or user.last_name)[:150]
        user.save()
        return user

    def get_or_create_user(self, access_token, id_token, payload):
        user = super().get_or_create_user(access_token, id_token, payload)
        if user is not None:
            sync_teams_from_claims(user, self.claims)
            # As authenticate() marks user.backend: the view that logs the user in reads it.
            user.oidc_grant = Grant(subject=payload["sub"], refresh_token=getattr(self, "refresh_token", None))
        return user


def _failed(request, reason):
    log.warning("OpenID Connect login failed: %s", reason)
    audit.login_failed(request, "OpenID Connect", str(reason))
    messages.error(request, f"Logging in with {settings.OIDC_NAME} did not work; please try again.")
    return HttpResponseRedirect(reverse("login"))


@method_decorator(login_not_required, name="dispatch")
class LoginStart(OIDCAuthenticationRequestView):
    def __init__(self, **kwargs):
        # As the backend: the endpoint is looked up per request, not at import.
        super(OIDCAuthenticationRequestView, self).__init__(**kwargs)

    def get(self, request):
        if not configured():
            raise Http404("Single sign-on is not configured.")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = endpoint("OIDC_OP_AUTHORIZATION_ENDPOINT", "authorization_endpoint")
        except ProviderUnavailable as exc:
            return _failed(request, exc)
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        return super().get(request)


@method_decorator(login_not_required, name="dispatch")
class LoginCallback(OIDCAuthenticationCallbackView):
    def get(self, request):
        if not configured():
            raise Http404("Single sign-on is not configured.")
        try:
            return super().get(request)
        except (SuspiciousOperation, ProviderUnavailable, requests.RequestException) as exc:
            return _failed(request, exc)

    def login_success(self):
        response = super().login_success()  # logs in, so the session's UserSession row exists
        keep_refresh_token(self.request.session.session_key, getattr(self.user, "oidc_grant", None))
        return response

    def login_failure(self):
        error = self.request.GET.get("error")
        return _failed(self.request, f"the provider answered {error}" if error else "no active user came of it")


def logout_url(request):
    """Where Log out sends the browser, asked before the session ends (the library's
    OIDC_OP_LOGOUT_URL_METHOD): for a session an OpenID login made, the provider's end-session
    endpoint, which logs the person out there too and sends them back to the login page; for
    any other session, or a provider that publishes no such endpoint or cannot be reached, the
    login page (a logout never waits on the provider to succeed)."""
    local = resolve_url(settings.LOGOUT_REDIRECT_URL)
    id_token = request.session.get("oidc_id_token")
    if not (id_token and configured() and settings.OIDC_LOGOUT_AT_PROVIDER):
        return local
    try:
        end_session = endpoint("OIDC_OP_LOGOUT_ENDPOINT", "end_session_endpoint")
    except ProviderUnavailable as exc:
        log.warning("Logged out of the platform only: %s", exc)
        return local
    query = urlencode(
        {
            "id_token_hint": id_token,
            "client_id": settings.OIDC_RP_CLIENT_ID,
            "post_logout_redirect_uri": request.build_absolute_uri(local),
        }
    )
    return f"{end_session}{'&' if '?' in end_session else '?'}{query}"


class Logout(OIDCLogoutView):
    """Django's logout (POST only; the user_logged_out signal writes the audit entry), then
    logout_url()."""

    http_method_names = ["post"]
