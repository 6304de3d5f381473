"""Working together from the browser, signed in by the organisation: log in through a real
OpenID provider (oidc-provider-mock, its own process) with real redirects, create a team, add
a colleague, share a dataset with the team, see it as the colleague, and log out at the
provider too. Real Chromium and the real web tier against the test database."""

import os
from pathlib import Path

import pytest

from accounts.models import Membership, Source, User, Visibility
from datasets.models import Dataset
from tests.browser import CHROMIUM, CHROMIUM_ARGS, serving, shot
from tests.factories import make_dataset
from tests.test_sso import CLIENT_ID, provider, set_claims  # noqa: F401 - provider is a fixture

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def sso_server(provider):  # noqa: F811
    """The web tier with OpenID Connect pointed at the provider."""
    with serving(
        Path(os.environ["PLATFORM_TEST_DIR"]) / "web-sso.log",
        OIDC_ISSUER=provider,
        OIDC_CLIENT_ID=CLIENT_ID,
        OIDC_CLIENT_SECRET="platform-secret",
        OIDC_NAME="Example Corp",
    ) as base:
        yield base


def log_in_through_the_provider(page, server, sub):
    """The platform's login page → the provider's own page (fill in who) → back, logged in."""
    from playwright.sync_api import expect

    page.goto(server + "/accounts/login/")
    page.click("text=Log in with Example Corp")
    # The provider's login page, on its own origin.
    page.wait_for_selector("input[name=sub]")
    assert page.url.startswith(os.environ["OIDC_TEST_PROVIDER"]), page.url
    page.fill("input[name=sub]", sub)
    page.click("button:has-text('Authorize')")
    page.wait_for_url(server + "/")
    expect(page.locator("#datasets")).to_be_visible()


def test_log_in_by_the_provider_share_a_dataset_with_a_new_team_and_the_colleague_sees_it(
    sso_server,
    provider,  # noqa: F811
    monkeypatch,
):
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    monkeypatch.setenv("OIDC_TEST_PROVIDER", provider)
    set_claims(provider, "ingrid-sub", preferred_username="ingrid", email="ingrid@example.org", groups=[])
    set_claims(provider, "kai-sub", preferred_username="kai", email="kai@example.org", groups=[])

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # The colleague has logged in once, so the platform knows them.
            kai_context = browser.new_context(viewport={"width": 1280, "height": 900})
            kai_page = kai_context.new_page()
            kai_page.set_default_timeout(30_000)
            log_in_through_the_provider(kai_page, sso_server, "kai-sub")
            expect(kai_page.locator("#datasets")).not_to_contain_text("Optics shapes")
            kai_context.close()

            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(30_000)
            log_in_through_the_provider(page, sso_server, "ingrid-sub")
            ingrid = User.objects.get(username="ingrid")
            assert not ingrid.has_usable_password()  # the provider's user, not a local one
            dataset = make_dataset(ingrid, name="Optics shapes")

            page.goto(sso_server + "/teams/")
            page.fill("#id_name", "Optics")
            page.click("button:has-text('Create team')")
            expect(page.locator("h1")).to_have_text("Team Optics")
            page.fill("#id_username", "kai")
            page.select_option("#id_role", "member")
            page.click("button:has-text('Add')")
            expect(page.locator("#members")).to_contain_text("kai")
            shot(page, "portal-team")

            page.goto(sso_server + dataset.get_absolute_url())
            page.select_option("#settings #id_visibility", "team")
            page.select_option("#settings #id_team", label="Optics")
            page.click("#settings button:has-text('Save')")
            expect(page.locator("#settings #id_visibility")).to_have_value("team")
            context.close()

            dataset.refresh_from_db()
            assert (dataset.visibility, dataset.team.name) == (Visibility.TEAM, "Optics")
            kai = User.objects.get(username="kai")
            membership = Membership.objects.get(user=kai, team__name="Optics")
            assert (membership.role, membership.source) == (Membership.Role.MEMBER, Source.LOCAL)

            # The colleague, in a browser of their own, through the provider again.
            kai_context = browser.new_context(viewport={"width": 1280, "height": 900})
            kai_page = kai_context.new_page()
            kai_page.set_default_timeout(30_000)
            log_in_through_the_provider(kai_page, sso_server, "kai-sub")
            expect(kai_page.locator("#datasets")).to_contain_text("Optics shapes")
            expect(kai_page.locator("#datasets")).to_contain_text("Optics")  # under the team's heading
            kai_page.goto(sso_server + "/datasets/")
            kai_page.click("text=Optics shapes")
            expect(kai_page.locator("h1")).to_contain_text("Optics shapes")
            shot(kai_page, "portal-colleague-sees-dataset")
            # The directory's login left the team made on the platform alone.
            assert Membership.objects.filter(user=kai, team__name="Optics").exists()
            assert Dataset.objects.visible_to(kai).filter(pk=dataset.pk).exists()

            # Log out ends the session at the provider as well, which sends the browser back.
            kai_page.click("button:has-text('Log out')")
            kai_page.wait_for_url(provider + "/oauth2/end_session*")
            kai_page.click("button:has-text('End session')")
            kai_page.wait_for_url(sso_server + "/accounts/login/")
            expect(kai_page.locator("text=Log in with Example Corp")).to_be_visible()
            kai_page.goto(sso_server + "/datasets/")
            assert kai_page.url.startswith(sso_server + "/accounts/login/")  # logged out here too
            kai_context.close()
        finally:
            browser.close()
