"""API tokens: several per user, shown once and kept hashed, read-only or expiring, revoked at once."""

import hashlib
import importlib
from datetime import timedelta

from django.apps import apps
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token

from accounts.models import ApiToken, AuditEntry, User
from tests.factories import make_experiment, make_token


def api_get(client, secret, path="/api/experiments/"):
    return client.get(path, HTTP_AUTHORIZATION=f"Token {secret}")


def test_a_token_made_on_the_page_is_shown_once_and_kept_hashed(client, alice):
    client.force_login(alice)
    response = client.post(reverse("api-token"), {"name": "nightly", "expires_in": "30"}, follow=True)
    token = ApiToken.objects.get(user=alice)
    secret = response.context["new_token"]["secret"]
    assert secret in response.content.decode()
    assert token.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret.startswith(token.prefix) and secret not in token.digest
    assert timedelta(days=29) < token.expires - timezone.now() <= timedelta(days=30)
    # The next visit shows the prefix only.
    again = client.get(reverse("api-token")).content.decode()
    assert secret not in again and f"{token.prefix}…" in again
    assert api_get(client, secret).status_code == 200


def test_several_named_tokens_work_side_by_side_and_record_their_last_use(client, alice):
    first, second = make_token(alice, "laptop"), make_token(alice, "ci")
    assert api_get(client, first.key).status_code == 200
    assert api_get(client, second.key).status_code == 200
    assert all(token.last_used is not None for token in ApiToken.objects.filter(user=alice))
    client.force_login(alice)
    page = client.get(reverse("api-token")).content.decode()
    assert "laptop" in page and "ci" in page


def test_a_wrong_or_missing_name_is_a_form_error(client, alice):
    client.force_login(alice)
    response = client.post(reverse("api-token"), {"name": "", "expires_in": "12"})
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert "Select a valid choice" in response.content.decode()
    assert not ApiToken.objects.exists()


def test_a_read_only_token_reads_but_does_not_change(client, alice):
    experiment = make_experiment(alice)
    token = make_token(alice, read_only=True)
    auth = {"HTTP_AUTHORIZATION": f"Token {token.key}"}
    assert client.get(f"/api/experiments/{experiment.pk}/", **auth).status_code == 200
    response = client.patch(
        f"/api/experiments/{experiment.pk}/", {"name": "renamed"}, content_type="application/json", **auth
    )
    assert response.status_code == 403
    assert "read-only" in response.json()["detail"]
    experiment.refresh_from_db()
    assert experiment.name != "renamed"


def test_an_expired_token_is_refused(client, alice):
    token = make_token(alice, expires=timezone.now() - timedelta(seconds=1))
    response = api_get(client, token.key)
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_revoking_a_token_stops_it_at_once_and_is_recorded(client, alice):
    token = make_token(alice, "laptop")
    assert api_get(client, token.key).status_code == 200
    client.force_login(alice)
    client.post(reverse("api-token-revoke", args=[token.pk]))
    client.logout()
    assert api_get(client, token.key).status_code == 401
    actions = list(AuditEntry.objects.filter(object_repr__startswith="laptop").values_list("action", flat=True))
    assert sorted(actions) == [AuditEntry.Action.TOKEN_CREATED, AuditEntry.Action.TOKEN_REVOKED]


def test_nobody_revokes_another_users_token(client, alice, charlie):
    token = make_token(alice)
    client.force_login(charlie)
    assert client.post(reverse("api-token-revoke", args=[token.pk])).status_code == 404
    assert ApiToken.objects.filter(pk=token.pk).exists()


def test_a_deactivated_users_tokens_stop_at_once(client, alice):
    token = make_token(alice)
    assert api_get(client, token.key).status_code == 200
    alice.is_active = False
    alice.save()
    assert api_get(client, token.key).status_code == 401


def test_the_old_single_token_keeps_working_after_the_migration(db):
    # The migration's conversion: a DRF authtoken key becomes a hashed named token.
    migration = importlib.import_module("accounts.migrations.0003_audit_log_and_api_tokens")
    user = User.objects.create_user("dora")
    old = Token.objects.create(user=user)
    migration.tokens_from_authtoken(apps, None)
    assert not Token.objects.exists()
    assert ApiToken.objects.get(user=user).digest == hashlib.sha256(old.key.encode()).hexdigest()
