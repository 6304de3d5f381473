"""OpenID Connect sessions answer to the provider between logins: each round of the
`directory` process (`manage.py sync_directory`) trades every live session's refresh token
for a new access token at the provider's token endpoint (grant_type=refresh_token, with the
client's own credentials, as a login sends them).

- The provider accepts: a refresh token it rotated in is kept in place of the old one, and
  the userinfo endpoint, asked with the new access token, says what the person's groups are
  now; their teams follow exactly as at a login (accounts.oidc.sync_teams_from_claims). A
  group left at the provider is a team left within a round, without a login.
- The provider refuses the refresh token (`invalid_grant`: revoked, expired, the person
  disabled or removed, their session there ended): this session ends too, deleted from the
  session store so its next page is logged out and its sockets close (accounts.sessions),
  with the audit entry "Session ended by the provider" by "directory (OpenID Connect)".
- The provider cannot say (unreachable, a timeout, a 5xx, or any other refusal, such as a
  client secret it does not take, which is about the platform and not about the person):
  nothing changes for that session; the summary counts it and says why, and the next round
  asks again. An outage must never look like everyone leaving.

A login keeps the refresh token beside its UserSession row (OIDCRefreshToken, sealed:
accounts.sealed). A provider that gives none leaves the session unchecked, as before: it
lasts until it expires or its person is deactivated. A userinfo answer without the teams
claim leaves the teams as the last login made them, rather than taking every team away
because the provider releases the claim only in its ID tokens.
"""

import logging
from dataclasses import dataclass, field

import requests
from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.utils import timezone

from accounts import audit
from accounts.directory import actor_name
from accounts.models import OIDCRefreshToken, Source, UserSession
from accounts.oidc import DirectoryOIDCBackend, ProviderUnavailable, sync_teams_from_claims
from accounts.sealed import Unreadable, seal
from accounts.sessions import end_session, session_is_live

log = logging.getLogger(__name__)


class ProviderRefused(Exception):
    """The provider refused the session's refresh token: the person's grant there is over."""


class NotChecked(Exception):
    """The provider could not say whether the session still stands; the message says why."""


@dataclass
class Summary:
    checked: int = 0
    refreshed: int = 0
    ended: int = 0
    errors: int = 0
    memberships_changed: int = 0
    without_teams_claim: int = 0
    problems: list = field(default_factory=list)  # each reason once, in the order met

    def __str__(self):
        words = (
            f"{self.checked} OpenID Connect session(s) checked: {self.refreshed} refreshed, "
            f"{self.ended} ended by the provider, {self.errors} could not be checked; "
            f"{self.memberships_changed} team membership(s) changed"
        )
        if self.without_teams_claim:
            words += (
                f"; the userinfo endpoint gave no {settings.OIDC_TEAMS_CLAIM!r} claim for "
                f"{self.without_teams_claim}, whose teams stay as their last login made them"
            )
        return words

    def failure(self):
        """Why some sessions could not be checked, in words; None when every one was."""
        if not self.errors:
            return None
        return (
            f"Could not check {self.errors} OpenID Connect session(s) with the provider at "
            f"{settings.OIDC_ISSUER}: {'; '.join(self.problems)}. Those sessions were not changed."
        )

    def not_checked(self, reason):
        self.errors += 1
        if reason not in self.problems:
            self.problems.append(reason)


def tokens_to_check():
    return OIDCRefreshToken.objects.filter(session__user__is_active=True).select_related("session__user").order_by("pk")


def refresh_oidc_sessions():
    """Ask the provider about every live session that holds a refresh token: refresh its
    teams, end it, or (when the provider cannot say) leave it; a Summary."""
    summary = Summary()
    for kept in tokens_to_check():
        if not session_is_live(kept.session):
            # Expired since: the row, and the token with it, are no use to anyone.
            UserSession.objects.filter(pk=kept.session_id).delete()
            continue
        summary.checked += 1
        try:
            changes, has_teams_claim = refresh(kept)
        except ProviderRefused as refusal:
            end_by_provider(kept, str(refusal))
            summary.ended += 1
        except NotChecked as error:
            log.warning("OpenID Connect: could not check the session of %s: %s", kept.session.user, error)
            summary.not_checked(str(error))
        else:
            summary.refreshed += 1
            summary.memberships_changed += changes
            summary.without_teams_claim += not has_teams_claim
    return summary


def refresh(kept):
    """Trade the session's refresh token for the person's claims now, and make their teams
    follow; (memberships changed, whether the teams claim was there at all)."""
    old_token = read_token(kept)
    tokens = token_response(old_token)
    changed = {"refreshed": timezone.now()}
    new_token = tokens.get("refresh_token")
    if isinstance(new_token, str) and new_token not in ("", old_token):
        changed["sealed_token"] = seal(new_token)
    # At once, before anything else can fail: a provider that rotated may not take the old one again.
    OIDCRefreshToken.objects.filter(pk=kept.pk).update(**changed)
    claims = userinfo(tokens["access_token"], kept.subject)
    if settings.OIDC_TEAMS_CLAIM not in claims:
        return 0, False
    return sync_teams_from_claims(kept.session.user, claims), True


def read_token(kept):
    try:
        return kept.token
    except Unreadable as error:
        # It will not become readable again; the session is simply unchecked from now on.
        OIDCRefreshToken.objects.filter(pk=kept.pk).delete()
        raise NotChecked(
            "a kept refresh token was sealed under another SECRET_KEY (put the old key in "
            "SECRET_KEY_FALLBACKS to keep them readable) and was dropped"
        ) from error


def token_response(refresh_token):
    """The token endpoint's answer to the refresh grant, sent with the client's credentials
    the way a login's code exchange sends them (mozilla-django-oidc's get_token)."""
    payload = {
        "client_id": settings.OIDC_RP_CLIENT_ID,
        "client_secret": settings.OIDC_RP_CLIENT_SECRET,
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
    }
    try:
        tokens = DirectoryOIDCBackend().get_token(payload)
    except requests.HTTPError as error:
        status, code = error.response.status_code, oauth_error(error.response)
        if code == "invalid_grant":
            raise ProviderRefused(f"HTTP {status} invalid_grant") from error
        hint = " (check OIDC_CLIENT_SECRET and OIDC_TOKEN_USE_BASIC_AUTH)" if code == "invalid_client" else ""
        raise NotChecked(f"its token endpoint answered HTTP {status} {code or ''}".rstrip() + hint) from error
    except (requests.RequestException, ProviderUnavailable, ValueError) as error:
        raise NotChecked(unreachable_words("token endpoint", error)) from error
    if not isinstance(tokens, dict) or not isinstance(tokens.get("access_token"), str):
        raise NotChecked("its token endpoint answered without an access token")
    return tokens


def userinfo(access_token, subject):
    """The person's claims from the userinfo endpoint, checked to be about the session's subject."""
    try:
        return DirectoryOIDCBackend().get_userinfo(access_token, None, {"sub": subject})
    except SuspiciousOperation as error:
        raise NotChecked(str(error)) from error
    except requests.HTTPError as error:
        raise NotChecked(f"its userinfo endpoint answered HTTP {error.response.status_code}") from error
    except (requests.RequestException, ProviderUnavailable, ValueError) as error:
        raise NotChecked(unreachable_words("userinfo endpoint", error)) from error


def oauth_error(response):
    """The `error` code of an OAuth 2.0 error answer (RFC 6749, 5.2), or None."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), str) else None


def unreachable_words(what, error):
    if isinstance(error, ProviderUnavailable):
        return f"its discovery document could not be read ({error})"
    if isinstance(error, requests.Timeout):
        return f"its {what} did not answer within {settings.OIDC_TIMEOUT} s"
    if isinstance(error, requests.ConnectionError):
        return f"its {what} could not be reached"
    if isinstance(error, ValueError):
        return f"its {what} answered something that is not JSON"
    return f"its {what} could not be asked ({type(error).__name__})"


@transaction.atomic
def end_by_provider(kept, reason):
    user = kept.session.user
    end_session(kept.session)  # its token row goes with it
    audit.record(
        audit.Action.ENDED_BY_PROVIDER,
        obj=user,
        actor_name=actor_name(Source.OIDC),
        detail=f"the provider refused the session's refresh token ({reason}): logged out",
    )
    log.info("OpenID Connect: the provider refused a session's refresh token (%s): %s logged out", reason, user)
