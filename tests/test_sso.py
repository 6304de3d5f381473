"""Single sign-on against real servers the tests start: an OpenID provider
(oidc-provider-mock, its own process: real discovery, real RS256-signed tokens from its
own key) and Debian's slapd with a small directory; plus the password fallback's
LOCAL_LOGIN switch and rate limit.

The browser's side of the OpenID flow is the Django test client for the platform and
`requests` for the provider, following each redirect by hand so every hop is checked.
"""

import base64
import importlib
import json
import shutil
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from io import StringIO
from urllib.parse import parse_qs, urlsplit

import jwt
import ldap
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from django.apps import apps as django_apps
from django.core.exceptions import SuspiciousOperation
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.urls import reverse

from accounts import oidc
from accounts.models import AuditEntry, FailedLogin, Membership, OIDCRefreshToken, Source, Team, User, UserSession
from accounts.sealed import seal
from accounts.sessions import session_store
from tests.browser import free_port
from tests.conftest import ROOT, subprocess_env
from tests.factories import make_token

CLIENT_ID = "platform"


def wait_until_answers(url, process, what):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}")
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    pytest.fail(f"{what} did not answer at {url}")


# --- OpenID Connect ---------------------------------------------------------------------


@contextmanager
def running_provider(folder, *options):
    """oidc-provider-mock in a process of its own on a free port: (issuer, process)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1", "--port", str(port), *options],
        cwd=ROOT,
        stdout=open(folder / "provider.log", "w"),
        stderr=subprocess.STDOUT,
    )
    issuer = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{issuer}/.well-known/openid-configuration", process, "the OpenID provider")
        yield issuer, process
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    with running_provider(tmp_path_factory.mktemp("oidc")) as (issuer, _):
        yield issuer


def use_provider(settings, issuer, client_id=CLIENT_ID, secret="platform-secret"):
    settings.OIDC_ISSUER = issuer
    settings.OIDC_RP_CLIENT_ID = client_id
    settings.OIDC_RP_CLIENT_SECRET = secret
    # The mock's refresh grant (authlib's) takes the client's secret only in the header.
    settings.OIDC_TOKEN_USE_BASIC_AUTH = True
    settings.OIDC_NAME = "Example Corp"
    return issuer


@pytest.fixture
def sso(provider, settings, db):
    return use_provider(settings, provider)


def set_claims(provider, sub, **claims):
    response = requests.put(f"{provider}/users/{sub}", json=claims, timeout=5)
    assert response.status_code == 204, response.text


def log_in_at_provider(client, sub, next_url=None):
    """The whole code flow; returns the platform's answer to the callback."""
    start = client.get("/accounts/oidc/start/", {"next": next_url} if next_url else {})
    assert start.status_code == 302
    authorize = start["Location"]
    # The provider signs the user in (its form's "sub" field) and sends the browser back.
    answer = requests.post(authorize, data={"sub": sub}, allow_redirects=False, timeout=5)
    assert answer.status_code == 302, answer.text
    back = urlsplit(answer.headers["Location"])
    assert back.path == "/accounts/oidc/callback/"
    return client.get(back.path, parse_qs(back.query))


def teams_of(user):
    return {m.team.name: (m.role, m.source) for m in user.memberships.select_related("team")}


def test_the_login_page_offers_the_organisation_when_configured(client, sso, settings):
    assert "Log in with Example Corp" in client.get("/accounts/login/").content.decode()
    settings.OIDC_ISSUER = ""
    assert "Log in with" not in client.get("/accounts/login/").content.decode()
    assert client.get("/accounts/oidc/start/").status_code == 404


def test_it_sends_the_browser_with_pkce_state_and_nonce(client, sso):
    start = client.get("/accounts/oidc/start/")
    location = urlsplit(start["Location"])
    # The endpoint came from the provider's discovery document.
    discovered = requests.get(f"{sso}/.well-known/openid-configuration", timeout=5).json()
    assert f"{location.scheme}://{location.netloc}{location.path}" == discovered["authorization_endpoint"]
    params = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert params["client_id"] == CLIENT_ID
    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) >= 43
    assert len(params["state"]) >= 32 and len(params["nonce"]) >= 32
    assert params["redirect_uri"] == "http://testserver/accounts/oidc/callback/"


def test_it_logs_in_creating_the_user_and_the_teams(client, sso):
    set_claims(
        sso, "olga-sub", preferred_username="olga", email="olga@example.org", given_name="Olga",
        groups=["vision", "audio:admin"],
    )  # fmt: skip
    answer = log_in_at_provider(client, "olga-sub", next_url="/datasets/new/")
    assert answer.status_code == 302 and answer["Location"] == "/datasets/new/"
    olga = User.objects.get(username="olga")
    assert (olga.email, olga.first_name, olga.has_usable_password()) == ("olga@example.org", "Olga", False)
    assert olga.source == Source.OIDC
    assert teams_of(olga) == {
        "vision": (Membership.Role.MEMBER, Source.OIDC),
        "audio": (Membership.Role.ADMIN, Source.OIDC),
    }
    assert set(Team.objects.filter(name__in=["vision", "audio"]).values_list("source", flat=True)) == {Source.OIDC}
    assert client.get("/").status_code == 200  # logged in: the console answers


def test_a_directory_account_cannot_become_a_local_superuser_of_the_same_name(client, sso):
    User.objects.create_superuser("root", password="break-glass-password")
    set_claims(sso, "root-sub", preferred_username="root", groups=["vision"])
    log_in_at_provider(client, "root-sub")
    assert client.get("/").status_code == 302  # not logged in
    assert not Team.objects.filter(name="vision").exists()


def test_a_group_removed_at_the_provider_is_gone_at_the_next_login(client, sso):
    set_claims(sso, "piotr-sub", preferred_username="piotr", groups=["vision", "robots:admin"])
    log_in_at_provider(client, "piotr-sub")
    piotr = User.objects.get(username="piotr")
    # A membership made on the platform, in a team of the platform's own.
    local = Team.objects.create(name="Reading group")
    Membership.objects.create(user=piotr, team=local)

    client.logout()
    set_claims(sso, "piotr-sub", preferred_username="piotr", groups=["robots"])
    assert log_in_at_provider(client, "piotr-sub").status_code == 302
    assert teams_of(piotr) == {
        "robots": (Membership.Role.MEMBER, Source.OIDC),  # no longer admin
        "Reading group": (Membership.Role.MEMBER, Source.LOCAL),
    }
    assert Team.objects.filter(name="vision").exists()  # the team stays; only the membership went


def test_a_callback_with_an_unknown_state_is_refused(client, sso):
    set_claims(sso, "quinn-sub", preferred_username="quinn")
    start = client.get("/accounts/oidc/start/")
    answer = requests.post(start["Location"], data={"sub": "quinn-sub"}, allow_redirects=False, timeout=5)
    query = parse_qs(urlsplit(answer.headers["Location"]).query)
    query["state"] = ["forged-state"]
    refused = client.get("/accounts/oidc/callback/", query, follow=True)
    assert "Logging in with Example Corp did not work" in refused.content.decode()
    assert not User.objects.filter(username="quinn").exists()


def test_logging_out_of_a_session_the_provider_made_logs_out_there_too(client, sso):
    set_claims(sso, "rosa-sub", preferred_username="rosa")
    log_in_at_provider(client, "rosa-sub")
    assert logged_in(client)
    answer = client.post(reverse("logout"))
    assert logged_out(client)
    assert AuditEntry.objects.filter(action=AuditEntry.Action.LOGOUT, actor__username="rosa").count() == 1

    # The browser goes to the provider's end-session endpoint, with the login's ID token as
    # the hint and the way back to the login page.
    location = urlsplit(answer["Location"])
    discovered = requests.get(f"{sso}/.well-known/openid-configuration", timeout=5).json()
    assert f"{location.scheme}://{location.netloc}{location.path}" == discovered["end_session_endpoint"]
    params = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert params["client_id"] == CLIENT_ID
    assert params["post_logout_redirect_uri"] == "http://testserver" + reverse("login")
    hint = jwt.decode(params["id_token_hint"], options={"verify_signature": False})
    assert (hint["sub"], hint["aud"], hint["iss"]) == ("rosa-sub", [CLIENT_ID], sso)
    # The provider asks the person to confirm, then sends them back to the login page.
    asked = requests.get(answer["Location"], timeout=5)
    assert asked.status_code == 200
    back = requests.post(
        f"{sso}/oauth2/end_session/confirm",
        data={"redirect_uri": params["post_logout_redirect_uri"]},
        allow_redirects=False,
        timeout=5,
    )
    assert back.status_code == 302 and back.headers["Location"] == "http://testserver" + reverse("login")


def test_a_password_session_logs_out_of_the_platform_only(client, sso, alice):
    client.force_login(alice)
    answer = client.post(reverse("logout"))
    assert answer.status_code == 302 and answer["Location"] == reverse("login")
    assert logged_out(client)


def test_logging_out_at_the_provider_can_be_switched_off(client, sso, settings):
    settings.OIDC_LOGOUT_AT_PROVIDER = False
    set_claims(sso, "sven-sub", preferred_username="sven")
    log_in_at_provider(client, "sven-sub")
    answer = client.post(reverse("logout"))
    assert answer["Location"] == reverse("login") and logged_out(client)


def test_a_provider_gone_at_logout_still_logs_out_of_the_platform(client, sso, settings):
    set_claims(sso, "tove-sub", preferred_username="tove")
    log_in_at_provider(client, "tove-sub")
    settings.OIDC_ISSUER = f"http://127.0.0.1:{free_port()}"  # nothing answers there
    answer = client.post(reverse("logout"))
    assert answer["Location"] == reverse("login") and logged_out(client)


def test_logout_takes_no_get(client, alice):
    client.force_login(alice)
    assert client.get(reverse("logout")).status_code == 405
    assert logged_in(client)


def real_id_token(provider, client_id, sub, nonce):
    """An ID token the provider signed for `client_id`, by the code flow without a browser."""
    discovered = requests.get(f"{provider}/.well-known/openid-configuration", timeout=5).json()
    redirect_uri = "http://rp.invalid/callback"
    params = {
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
        "scope": "openid email profile", "state": "s", "nonce": nonce,
    }  # fmt: skip
    answer = requests.post(
        discovered["authorization_endpoint"], params=params, data={"sub": sub}, allow_redirects=False, timeout=5
    )
    code = parse_qs(urlsplit(answer.headers["Location"]).query)["code"][0]
    tokens = requests.post(
        discovered["token_endpoint"],
        data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "client_id": client_id, "client_secret": "any",
        },
        timeout=5,
    )  # fmt: skip
    tokens.raise_for_status()
    return tokens.json()["id_token"]


def test_the_verifier_accepts_the_providers_token_for_this_client(sso):
    token = real_id_token(sso, CLIENT_ID, "rosa-sub", "n-1")
    claims = oidc.DirectoryOIDCBackend().verify_token(token, nonce="n-1")
    assert (claims["sub"], claims["aud"], claims["iss"]) == ("rosa-sub", [CLIENT_ID], sso)


def test_the_verifier_refuses_a_token_for_another_client(sso):
    token = real_id_token(sso, "some-other-app", "rosa-sub", "n-1")
    with pytest.raises(SuspiciousOperation, match="Audience doesn't match"):
        oidc.DirectoryOIDCBackend().verify_token(token, nonce="n-1")


def test_the_verifier_refuses_another_nonce(sso):
    token = real_id_token(sso, CLIENT_ID, "rosa-sub", "n-1")
    with pytest.raises(SuspiciousOperation, match="Nonce"):
        oidc.DirectoryOIDCBackend().verify_token(token, nonce="n-2")


def test_the_verifier_refuses_a_token_whose_claims_were_changed(sso):
    header, payload, signature = real_id_token(sso, CLIENT_ID, "rosa-sub", "n-1").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(SuspiciousOperation, match="Signature verification failed"):
        oidc.DirectoryOIDCBackend().verify_token(f"{header}.{forged}.{signature}", nonce="n-1")


def test_the_verifier_refuses_a_token_signed_with_another_key(sso):
    genuine = real_id_token(sso, CLIENT_ID, "rosa-sub", "n-1")
    claims = jwt.decode(genuine, options={"verify_signature": False})
    # The same header (so the verifier takes the provider's key), signed with a key of our own.
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    header = jwt.get_unverified_header(genuine)
    forged = jwt.encode(claims, other_key, algorithm="RS256", headers={k: v for k, v in header.items() if k == "kid"})
    with pytest.raises(SuspiciousOperation, match="Signature verification failed"):
        oidc.DirectoryOIDCBackend().verify_token(forged, nonce="n-1")


def test_a_provider_that_does_not_answer_sends_back_to_the_login_page(client, settings, db):
    settings.OIDC_ISSUER = f"http://127.0.0.1:{free_port()}"
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    settings.OIDC_NAME = "Example Corp"
    answer = client.get("/accounts/oidc/start/", follow=True)
    assert answer.status_code == 200
    assert "Logging in with Example Corp did not work" in answer.content.decode()


# --- OpenID Connect between logins: the refresh token (manage.py sync_directory) -------------


def sync():
    out = StringIO()
    call_command("sync_directory", stdout=out)
    return out.getvalue()


def failing_sync():
    """A sync that must fail: (what it printed, its error)."""
    out = StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("sync_directory", stdout=out)
    return out.getvalue(), str(failed.value)


def logged_in(client):
    return client.get("/").status_code == 200


def logged_out(client):
    answer = client.get("/")
    return answer.status_code == 302 and answer["Location"].startswith(reverse("login"))


def a_person_logged_in(provider, sub, username, groups=()):
    """A browser logged in through the provider as `username`, in the given groups there."""
    set_claims(provider, sub, preferred_username=username, groups=list(groups))
    browser = Client()
    assert log_in_at_provider(browser, sub).status_code == 302
    assert logged_in(browser)
    return browser


def revoke_tokens(provider, sub):
    assert requests.post(f"{provider}/users/{sub}/revoke-tokens", timeout=5).status_code == 204


def test_a_session_whose_tokens_the_provider_revoked_is_logged_out_by_the_sync(sso):
    vera = a_person_logged_in(sso, "vera-sub", "vera", groups=["vision"])
    walt = a_person_logged_in(sso, "walt-sub", "walt", groups=["vision"])
    assert OIDCRefreshToken.objects.count() == 2  # one per session

    revoke_tokens(sso, "vera-sub")
    assert "2 OpenID Connect session(s) checked: 1 refreshed, 1 ended by the provider, 0 could not" in sync()
    assert logged_out(vera)
    assert logged_in(walt)
    ended = AuditEntry.objects.get(action=AuditEntry.Action.ENDED_BY_PROVIDER)
    assert (ended.actor, ended.actor_name, ended.object_repr) == (None, "directory (OpenID Connect)", "vera")
    assert "invalid_grant" in ended.detail
    # The session ended, not the account: the provider may let vera in again.
    vera_account = User.objects.get(username="vera")
    assert vera_account.is_active and not UserSession.objects.filter(user=vera_account).exists()
    assert "1 OpenID Connect session(s) checked: 1 refreshed, 0 ended" in sync()


def test_a_group_changed_at_the_provider_changes_the_teams_without_a_login(sso):
    xena = a_person_logged_in(sso, "xena-sub", "xena", groups=["vision", "audio:admin"])
    account = User.objects.get(username="xena")
    assert teams_of(account) == {
        "vision": (Membership.Role.MEMBER, Source.OIDC),
        "audio": (Membership.Role.ADMIN, Source.OIDC),
    }

    set_claims(sso, "xena-sub", preferred_username="xena", groups=["vision"])
    assert "1 refreshed, 0 ended by the provider, 0 could not be checked; 1 team membership(s) changed" in sync()
    assert teams_of(account) == {"vision": (Membership.Role.MEMBER, Source.OIDC)}
    removed = AuditEntry.objects.get(action=AuditEntry.Action.MEMBER_REMOVED)
    assert (removed.actor_name, removed.team_name) == ("directory (OpenID Connect)", "audio")

    set_claims(sso, "xena-sub", preferred_username="xena", groups=["vision", "robots"])
    assert "1 team membership(s) changed" in sync()
    assert teams_of(account) == {
        "vision": (Membership.Role.MEMBER, Source.OIDC),
        "robots": (Membership.Role.MEMBER, Source.OIDC),
    }
    assert logged_in(xena)


def test_a_userinfo_answer_without_the_teams_claim_leaves_the_teams(sso):
    # As from a provider that puts the groups in its ID tokens only: no claim is not "no groups".
    a_person_logged_in(sso, "finn-sub", "finn", groups=["vision"])
    set_claims(sso, "finn-sub", preferred_username="finn")
    assert "1 refreshed" in (out := sync())
    assert "the userinfo endpoint gave no 'groups' claim for 1, whose teams stay as their last login made them" in out
    assert teams_of(User.objects.get(username="finn")) == {"vision": (Membership.Role.MEMBER, Source.OIDC)}


def test_a_session_that_expired_is_not_asked_about(sso):
    gina = a_person_logged_in(sso, "gina-sub", "gina")
    session_store().delete(gina.session.session_key)  # as an expiry leaves it: the row stays behind
    revoke_tokens(sso, "gina-sub")
    assert "0 OpenID Connect session(s) checked" in sync()
    assert not UserSession.objects.filter(user__username="gina").exists()
    assert not OIDCRefreshToken.objects.exists()
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.ENDED_BY_PROVIDER).exists()


def test_a_provider_that_is_down_logs_nobody_out_and_the_sync_fails(tmp_path, settings, db):
    with running_provider(tmp_path) as (issuer, process):
        use_provider(settings, issuer)
        yves = a_person_logged_in(issuer, "yves-sub", "yves", groups=["vision"])
        process.terminate()
        process.wait(timeout=10)

    # The discovery document is still the one the login read: the token endpoint is down.
    out, error = failing_sync()
    assert "1 OpenID Connect session(s) checked: 0 refreshed, 0 ended by the provider, 1 could not" in out
    assert error == (
        f"Could not check 1 OpenID Connect session(s) with the provider at {issuer}: "
        "its token endpoint could not be reached. Those sessions were not changed."
    )
    # A process that starts now cannot even read the discovery document.
    oidc._discovered.clear()
    assert "its discovery document could not be read" in failing_sync()[1]

    assert logged_in(yves)
    assert teams_of(User.objects.get(username="yves")) == {"vision": (Membership.Role.MEMBER, Source.OIDC)}
    assert OIDCRefreshToken.objects.count() == 1
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.ENDED_BY_PROVIDER).exists()


def test_a_client_secret_the_provider_refuses_logs_nobody_out(tmp_path, settings, db):
    # A provider that knows its clients: the refusal (invalid_client) is about the platform's
    # credentials, not about the person, so it must not look like everyone leaving.
    with running_provider(tmp_path, "--require-registration") as (issuer, _):
        registration = requests.post(
            f"{issuer}/oauth2/clients",
            json={
                "redirect_uris": ["http://testserver/accounts/oidc/callback/"],
                "token_endpoint_auth_method": "client_secret_basic",
            },
            timeout=5,
        )
        assert registration.status_code == 201, registration.text
        client = registration.json()
        use_provider(settings, issuer, client_id=client["client_id"], secret=client["client_secret"])
        zora = a_person_logged_in(issuer, "zora-sub", "zora")
        assert "1 refreshed" in sync()

        settings.OIDC_RP_CLIENT_SECRET = "not-the-secret"
        out, error = failing_sync()
        assert "0 ended by the provider, 1 could not be checked" in out
        assert "its token endpoint answered HTTP 401 invalid_client (check OIDC_CLIENT_SECRET" in error
        assert logged_in(zora)
        assert not AuditEntry.objects.filter(action=AuditEntry.Action.ENDED_BY_PROVIDER).exists()


def test_a_provider_that_gives_no_refresh_token_leaves_the_session_unchecked(tmp_path, settings, db):
    with running_provider(tmp_path, "--no-refresh-token") as (issuer, _):
        use_provider(settings, issuer)
        adam = a_person_logged_in(issuer, "adam-sub", "adam")
        assert not OIDCRefreshToken.objects.exists()
        revoke_tokens(issuer, "adam-sub")
        assert "0 OpenID Connect session(s) checked" in sync()
        assert logged_in(adam)


def test_the_refresh_token_is_kept_sealed_beside_the_session(sso, settings):
    bea = a_person_logged_in(sso, "bea-sub", "bea")
    kept = OIDCRefreshToken.objects.get()
    assert (kept.session.session_key, kept.subject) == (bea.session.session_key, "bea-sub")
    token = kept.token
    # It is the provider's real refresh token...
    token_endpoint = oidc.discovery()["token_endpoint"]
    grant = {"grant_type": "refresh_token", "refresh_token": token}
    answer = requests.post(token_endpoint, data=grant, auth=(CLIENT_ID, "platform-secret"), timeout=5)
    assert "access_token" in answer.json()
    # ...and neither its table nor the session's data holds it in clear.
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM accounts_oidcrefreshtoken")
        rows = repr(cursor.fetchall())
    assert kept.sealed_token in rows and token not in rows
    assert token not in json.dumps(session_store(kept.session.session_key).load())
    # A key rotation the Django way keeps it readable: the old key among the fallbacks.
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-newer-secret-key"
    assert "1 refreshed" in sync()


def test_a_token_sealed_under_another_key_is_dropped_without_logging_anyone_out(sso, settings):
    cleo = a_person_logged_in(sso, "cleo-sub", "cleo")
    own_key = settings.SECRET_KEY
    settings.SECRET_KEY = "a-key-this-installation-no-longer-has"
    OIDCRefreshToken.objects.update(sealed_token=seal("some-refresh-token"))
    settings.SECRET_KEY = own_key
    assert "was sealed under another SECRET_KEY" in failing_sync()[1]
    assert logged_in(cleo)
    assert not OIDCRefreshToken.objects.exists()  # unreadable for good: that session is unchecked now
    assert "0 OpenID Connect session(s) checked" in sync()


def test_an_ldap_failure_does_not_keep_the_provider_from_being_asked(sso, settings):
    dora = a_person_logged_in(sso, "dora-sub", "dora")
    revoke_tokens(sso, "dora-sub")
    settings.LDAP_SERVER_URI = f"ldap://127.0.0.1:{free_port()}"
    out, error = failing_sync()
    assert error.startswith(f"Could not read the directory at {settings.LDAP_SERVER_URI}")
    assert "1 OpenID Connect session(s) checked: 0 refreshed, 1 ended by the provider" in out
    assert logged_out(dora)


# --- LDAP --------------------------------------------------------------------------------

BASE = "dc=example,dc=org"
DIRECTORY = f"""\
dn: {BASE}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: ou=people,{BASE}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{BASE}
objectClass: organizationalUnit
ou: groups

dn: cn=platform,{BASE}
objectClass: applicationProcess
objectClass: simpleSecurityObject
cn: platform
userPassword: platform-bind-secret

dn: uid=sven,ou=people,{BASE}
objectClass: inetOrgPerson
uid: sven
cn: Sven Berg
givenName: Sven
sn: Berg
mail: sven@example.org
userPassword: sven-ldap-password

dn: uid=tove,ou=people,{BASE}
objectClass: inetOrgPerson
uid: tove
cn: Tove Lind
sn: Lind
userPassword: tove-ldap-password

dn: cn=vision,ou=groups,{BASE}
objectClass: groupOfNames
cn: vision
member: uid=sven,ou=people,{BASE}
member: uid=tove,ou=people,{BASE}

dn: cn=audio:admin,ou=groups,{BASE}
objectClass: groupOfNames
cn: audio:admin
member: uid=sven,ou=people,{BASE}
"""


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    """slapd on a free port, with the directory above loaded by slapadd."""
    slapd = shutil.which("slapd") or "/usr/sbin/slapd"
    slapadd = shutil.which("slapadd") or "/usr/sbin/slapadd"
    folder = tmp_path_factory.mktemp("slapd")
    (folder / "data").mkdir()
    config = folder / "slapd.conf"
    config.write_text(
        textwrap.dedent(f"""\
        include /etc/ldap/schema/core.schema
        include /etc/ldap/schema/cosine.schema
        include /etc/ldap/schema/inetorgperson.schema
        modulepath /usr/lib/ldap
        moduleload back_mdb
        pidfile {folder}/slapd.pid
        database mdb
        suffix "{BASE}"
        rootdn "cn=root,{BASE}"
        rootpw root-secret
        directory {folder}/data
        access to attrs=userPassword by anonymous auth by * none
        access to * by users read by * none
        """)
    )
    (folder / "directory.ldif").write_text(DIRECTORY)
    subprocess.run([slapadd, "-f", config, "-l", folder / "directory.ldif"], check=True, capture_output=True)
    port = free_port()
    log = open(folder / "slapd.log", "w")
    # -d keeps slapd in the foreground, so the test owns the process it started.
    process = subprocess.Popen(
        [slapd, "-f", config, "-h", f"ldap://127.0.0.1:{port}/", "-d", "0"], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        import ldap

        deadline = time.monotonic() + 30
        while True:
            try:
                connection = ldap.initialize(f"ldap://127.0.0.1:{port}")
                connection.simple_bind_s(f"cn=platform,{BASE}", "platform-bind-secret")
                break
            except ldap.SERVER_DOWN:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"slapd did not start; see {folder / 'slapd.log'}")
                time.sleep(0.1)
        yield f"ldap://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def ldap_login(directory, settings, db):
    settings.LDAP_SERVER_URI = directory
    settings.LDAP_BIND_DN = f"cn=platform,{BASE}"
    settings.LDAP_BIND_PASSWORD = "platform-bind-secret"
    settings.LDAP_USER_SEARCH_BASE = f"ou=people,{BASE}"
    settings.LDAP_GROUP_SEARCH_BASE = f"ou=groups,{BASE}"
    return directory


def post_login(client, username, password, **extra):
    return client.post("/accounts/login/", {"username": username, "password": password}, **extra)


def test_ldap_login_makes_groups_teams(client, ldap_login):
    answer = post_login(client, "sven", "sven-ldap-password")
    assert answer.status_code == 302 and answer["Location"] == "/"
    sven = User.objects.get(username="sven")
    assert (sven.email, sven.first_name, sven.last_name) == ("sven@example.org", "Sven", "Berg")
    assert teams_of(sven) == {
        "vision": (Membership.Role.MEMBER, Source.LDAP),
        "audio": (Membership.Role.ADMIN, Source.LDAP),
    }
    assert Team.objects.get(name="vision").source == Source.LDAP


def test_ldap_drops_a_membership_the_directory_no_longer_lists(client, ldap_login):
    tove = User.objects.create_user("tove")
    Membership.objects.create(user=tove, team=Team.objects.create(name="audio", source=Source.LDAP), source=Source.LDAP)
    assert post_login(client, "tove", "tove-ldap-password").status_code == 302
    assert teams_of(tove) == {"vision": (Membership.Role.MEMBER, Source.LDAP)}


def test_ldap_cannot_log_in_as_a_local_superuser_of_the_same_name(client, ldap_login):
    User.objects.create_superuser("sven", password="local-break-glass")
    assert post_login(client, "sven", "sven-ldap-password").status_code == 200
    assert client.get("/").status_code == 302
    assert not Team.objects.filter(name="vision").exists()


def test_ldap_refuses_a_wrong_password(client, ldap_login):
    answer = post_login(client, "sven", "not-his-password")
    assert answer.status_code == 200
    assert "Please enter a correct username and password" in answer.content.decode()
    assert not User.objects.filter(username="sven").exists()
    assert FailedLogin.objects.filter(username="sven").count() == 1


# --- LDAP between logins: leavers and left groups (manage.py sync_directory) -------------------


class DirectoryChanges:
    """People a test adds to the shared slapd, as its root, and takes out again afterwards
    (the module's other tests see the directory above, unchanged)."""

    def __init__(self, uri):
        self.connection = ldap.initialize(uri)
        self.connection.simple_bind_s(f"cn=root,{BASE}", "root-secret")
        self.added = []

    @staticmethod
    def dn(uid):
        return f"uid={uid},ou=people,{BASE}"

    def add_person(self, uid, password, groups=()):
        entry = {"objectClass": "inetOrgPerson", "uid": uid, "cn": uid, "sn": uid, "userPassword": password}
        self.connection.add_s(self.dn(uid), [(name, [value.encode()]) for name, value in entry.items()])
        self.added.append(uid)
        for group in groups:
            self.change_group(group, ldap.MOD_ADD, uid)

    def leave_group(self, uid, group):
        self.change_group(group, ldap.MOD_DELETE, uid)

    def change_group(self, group, operation, uid):
        self.connection.modify_s(f"cn={group},ou=groups,{BASE}", [(operation, "member", [self.dn(uid).encode()])])

    def remove_person(self, uid):
        for group in ("vision", "audio:admin"):
            try:
                self.leave_group(uid, group)
            except ldap.NO_SUCH_ATTRIBUTE:
                pass
        try:
            self.connection.delete_s(self.dn(uid))
        except ldap.NO_SUCH_OBJECT:
            pass

    def put_back(self):
        for uid in self.added:
            self.remove_person(uid)
        self.connection.unbind_s()


@pytest.fixture
def directory_changes(ldap_login):
    changes = DirectoryChanges(ldap_login)
    yield changes
    changes.put_back()


def test_sync_deactivates_a_person_removed_from_the_directory(client, directory_changes):
    directory_changes.add_person("ulla", "ulla-ldap-password", groups=["vision"])
    assert post_login(client, "ulla", "ulla-ldap-password").status_code == 302
    ulla = User.objects.get(username="ulla")
    assert ulla.source == Source.LDAP
    api = Client(HTTP_AUTHORIZATION=f"Token {make_token(ulla).key}")
    assert client.get("/").status_code == 200
    assert api.get("/api/experiments/").status_code == 200

    directory_changes.remove_person("ulla")
    assert "1 LDAP account(s) checked, 1 deactivated" in sync()
    ulla.refresh_from_db()
    assert not ulla.is_active
    answer = client.get("/")  # the open session's next page
    assert answer.status_code == 302 and answer["Location"].startswith(reverse("login"))
    assert api.get("/api/experiments/").status_code == 401
    left = AuditEntry.objects.get(action=AuditEntry.Action.LEFT_DIRECTORY)
    assert (left.actor, left.actor_name, left.object_repr) == (None, "directory (LDAP)", "ulla")
    assert AuditEntry.objects.filter(action=AuditEntry.Action.SESSIONS_ENDED, object_repr="ulla").exists()


def test_sync_drops_the_membership_of_a_group_the_person_left_without_a_login(client, directory_changes):
    directory_changes.add_person("ulla", "ulla-ldap-password", groups=["vision", "audio:admin"])
    assert post_login(client, "ulla", "ulla-ldap-password").status_code == 302
    ulla = User.objects.get(username="ulla")
    assert teams_of(ulla) == {
        "vision": (Membership.Role.MEMBER, Source.LDAP),
        "audio": (Membership.Role.ADMIN, Source.LDAP),
    }

    directory_changes.leave_group("ulla", "audio:admin")
    assert "0 deactivated (no longer in the directory), 1 team membership(s) changed" in sync()
    assert teams_of(ulla) == {"vision": (Membership.Role.MEMBER, Source.LDAP)}
    removed = AuditEntry.objects.get(action=AuditEntry.Action.MEMBER_REMOVED)
    assert (removed.actor_name, removed.team_name) == ("directory (LDAP)", "audio")
    assert client.get("/").status_code == 200  # still in the directory: still logged in
    assert "0 team membership(s) changed" in sync()  # nothing more to do


def an_ldap_account(username):
    """An account an earlier LDAP login made, in the directory's team "vision"."""
    user = User.objects.create_user(username, source=Source.LDAP)
    team, _ = Team.objects.get_or_create(name="vision", defaults={"source": Source.LDAP})
    Membership.objects.create(user=user, team=team, source=Source.LDAP)
    return user


@pytest.mark.parametrize(
    "broken, message",
    [
        ({"LDAP_SERVER_URI": "ldap://127.0.0.1:{free}"}, "Can't contact LDAP server"),
        (
            {"LDAP_BIND_PASSWORD": "not-the-bind-secret"},
            "Invalid credentials. Check LDAP_BIND_DN and LDAP_BIND_PASSWORD.",
        ),
    ],
    ids=["unreachable", "bind-refused"],
)
def test_sync_changes_nothing_when_the_directory_cannot_be_read(ldap_login, settings, broken, message):
    leaver, sven = an_ldap_account("ulla"), an_ldap_account("sven")
    for name, value in broken.items():
        setattr(settings, name, value.format(free=free_port()))
    with pytest.raises(CommandError) as failed:
        sync()
    assert f"Could not read the directory at {settings.LDAP_SERVER_URI}: " in str(failed.value)
    assert message in str(failed.value) and str(failed.value).endswith("Nothing was changed.")
    assert User.objects.filter(pk__in=[leaver.pk, sven.pk], is_active=True).count() == 2
    assert Membership.objects.filter(user__in=[leaver, sven], source=Source.LDAP).count() == 2
    assert not AuditEntry.objects.filter(action=AuditEntry.Action.LEFT_DIRECTORY).exists()


def test_sync_refuses_a_directory_that_finds_none_of_several_accounts(ldap_login, settings):
    # A search base with nobody under it: every account would look like a leaver.
    settings.LDAP_USER_SEARCH_BASE = f"ou=groups,{BASE}"
    accounts = [an_ldap_account("sven"), an_ldap_account("tove")]
    with pytest.raises(CommandError, match="found none of the 2 LDAP accounts.*Nothing was changed"):
        sync()
    assert User.objects.filter(pk__in=[a.pk for a in accounts], is_active=True).count() == 2


def test_sync_never_touches_local_accounts_or_superusers(ldap_login, alice, team):
    # Neither is in the directory; the superuser even carries an LDAP membership and source.
    root = User.objects.create_superuser("root", password="break-glass-password", source=Source.LDAP)
    Membership.objects.create(user=root, team=Team.objects.create(name="audio", source=Source.LDAP), source=Source.LDAP)
    an_ldap_account("sven")
    assert "1 LDAP account(s) checked, 0 deactivated" in sync()
    assert User.objects.filter(username__in=["alice", "root"], is_active=True).count() == 2
    assert teams_of(alice) == {team.name: (Membership.Role.ADMIN, Source.LOCAL)}
    assert teams_of(root) == {"audio": (Membership.Role.MEMBER, Source.LDAP)}
    assert teams_of(User.objects.get(username="sven")) == {
        "vision": (Membership.Role.MEMBER, Source.LDAP),
        "audio": (Membership.Role.ADMIN, Source.LDAP),
    }


def test_the_migration_marks_accounts_with_directory_memberships(db, team):
    migration = importlib.import_module("accounts.migrations.0006_account_source")
    local, from_oidc, from_ldap = (User.objects.create_user(name) for name in ("lena", "olga", "sven"))
    root = User.objects.create_superuser("root", password="break-glass-password")
    Membership.objects.create(user=local, team=team)
    Membership.objects.create(user=from_oidc, team=team, source=Source.OIDC)
    for user in (from_ldap, root):
        Membership.objects.create(user=user, team=team, source=Source.LDAP)
    migration.mark_directory_accounts(django_apps, None)
    sources = dict(User.objects.values_list("username", "source"))
    assert sources == {"lena": Source.LOCAL, "olga": Source.OIDC, "sven": Source.LDAP, "root": Source.LOCAL}


# The command as the Procfile's `directory` process runs it.


def start_command(tmp_path, *args, **env):
    log = tmp_path / "sync_directory.log"
    process = subprocess.Popen(
        [sys.executable, "manage.py", "sync_directory", *args],
        cwd=ROOT,
        env=subprocess_env(**env),
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
    )
    return process, log


def wait_for_output(log, process, text, count=1, seconds=30):
    deadline = time.monotonic() + seconds
    while log.read_text().count(text) < count:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {text!r} ×{count} from sync_directory (exit {process.poll()}):\n{log.read_text()}")
        time.sleep(0.1)


def test_the_command_fails_with_the_error_and_every_keeps_trying(transactional_db, tmp_path):
    unreachable = f"ldap://127.0.0.1:{free_port()}"
    once = subprocess.run(
        [sys.executable, "manage.py", "sync_directory"],
        cwd=ROOT,
        env=subprocess_env(LDAP_SERVER_URI=unreachable),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert once.returncode == 1
    assert f"Could not read the directory at {unreachable}: Can't contact LDAP server" in once.stderr

    process, log = start_command(tmp_path, "--every", "1", LDAP_SERVER_URI=unreachable)
    try:
        wait_for_output(log, process, "Nothing was changed. Trying again in 1 s.", count=2)
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_every_without_a_directory_stays_idle_instead_of_exiting(transactional_db, tmp_path):
    # honcho stops every process of `make run` when one exits.
    process, log = start_command(tmp_path, "--every", LDAP_SERVER_URI="", OIDC_ISSUER="")
    try:
        wait_for_output(log, process, "Neither LDAP (LDAP_SERVER_URI) nor OpenID Connect (OIDC_ISSUER, OIDC_CLIENT_ID)")
        assert log.read_text().strip().endswith("Idle.")
        time.sleep(1)
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_every_ends_the_sessions_the_provider_no_longer_accepts(provider, settings, transactional_db, tmp_path):
    use_provider(settings, provider)
    emil = a_person_logged_in(provider, "emil-sub", "emil")
    revoke_tokens(provider, "emil-sub")
    process, log = start_command(
        tmp_path,
        "--every",
        "1",
        LDAP_SERVER_URI="",
        OIDC_ISSUER=provider,
        OIDC_CLIENT_ID=CLIENT_ID,
        OIDC_CLIENT_SECRET="platform-secret",
        OIDC_TOKEN_USE_BASIC_AUTH="1",
    )
    try:
        wait_for_output(log, process, "1 ended by the provider")
        wait_for_output(log, process, "0 OpenID Connect session(s) checked")  # the next round
        assert logged_out(emil)
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- The platform's own passwords ----------------------------------------------------------


def test_local_login_off_refuses_a_users_password(client, alice, settings):
    settings.LOCAL_LOGIN = False
    page = client.get("/accounts/login/").content.decode()
    assert "Administrator login" in page
    answer = post_login(client, "alice", "alice-password")
    assert answer.status_code == 200
    assert "passwords here are only for administrators" in answer.content.decode()
    assert client.get("/").status_code == 302  # still a stranger


def test_local_login_off_still_admits_a_superuser(client, db, settings):
    settings.LOCAL_LOGIN = False
    User.objects.create_superuser("root", password="break-glass-password")
    answer = post_login(client, "root", "break-glass-password")
    assert answer.status_code == 302 and answer["Location"] == "/"
    assert client.get("/").status_code == 200


def test_too_many_failures_lock_the_account(client, alice, settings):
    for attempt in range(settings.LOGIN_FAILURES_PER_ACCOUNT):
        # Each from another address: the account's own count is what locks it.
        post_login(client, "alice", "guess", REMOTE_ADDR=f"192.0.2.{attempt + 1}")
    answer = post_login(client, "alice", "alice-password", REMOTE_ADDR="198.51.100.7")
    assert answer.status_code == 200
    assert "Too many failed attempts for this account; try again in 5 minutes." in answer.content.decode()
    assert client.get("/").status_code == 302
    # Another account is not affected.
    User.objects.create_user("dora", password="dora-password")
    assert post_login(client, "dora", "dora-password", REMOTE_ADDR="198.51.100.7").status_code == 302


def test_too_many_failures_from_one_address_lock_it(client, alice, settings):
    settings.LOGIN_FAILURES_PER_ADDRESS = 3
    for name in ("ann", "ben", "cai"):
        post_login(client, name, "guess", REMOTE_ADDR="203.0.113.9")
    answer = post_login(client, "alice", "alice-password", REMOTE_ADDR="203.0.113.9")
    assert "Too many failed attempts from your address; try again in 5 minutes." in answer.content.decode()
    assert post_login(client, "alice", "alice-password", REMOTE_ADDR="203.0.113.10").status_code == 302


def test_the_admin_login_is_rate_limited_too(client, db, settings):
    User.objects.create_superuser("root", password="break-glass-password")
    for _ in range(settings.LOGIN_FAILURES_PER_ACCOUNT):
        client.post("/admin/login/", {"username": "root", "password": "guess"})
    answer = client.post("/admin/login/", {"username": "root", "password": "break-glass-password"})
    assert "Too many failed attempts for this account" in answer.content.decode()
