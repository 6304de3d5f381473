"""The network editor and library in Chromium: line numbers and the error's line marked,
the table cleared when the network changes, the sweep count, the save dialog, and a saved
network opened, renamed and trained from."""

import re

import pytest

from accounts.models import Membership, Team, User
from models.models import SavedNetwork
from tests.browser import browser_page, held_back, log_in, platform_server, set_editor, shot, wait_until_held  # noqa: F401 - platform_server is a fixture

# Visualize traces the network in the web process, on a machine that may be busy.
SLOW = 30_000
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_editor_dialog_and_library(platform_server, monkeypatch):  # noqa: F811
    gil = User.objects.create_user("gil", password="gil-password-1")
    Membership.objects.create(user=gil, team=Team.objects.create(name="Optics"))
    from playwright.sync_api import expect

    with browser_page(monkeypatch) as page:
        log_in(page, platform_server, "gil", "gil-password-1")

        page.goto(platform_server + "/experiments/new/")
        # A standard network's table goes once the network is switched to a custom one.
        page.select_option("#id_network", "lenet")
        page.click("#visualize")
        expect(page.locator("#visualization")).to_be_visible(timeout=SLOW)
        page.select_option("#id_network", "custom")
        expect(page.locator("#visualization")).to_be_hidden(timeout=SLOW)

        # Customize: the spec in an editor with line numbers and highlighting.
        page.select_option("#customize-from", "network:lenet")
        expect(page.locator("#id_network_spec")).to_have_value(re.compile("type: conv"), timeout=SLOW)
        expect(page.locator("#total-params")).to_have_text("431.1 k", timeout=SLOW)
        expect(page.locator(".CodeMirror-code .CodeMirror-linenumber").first).to_have_text("1", timeout=SLOW)
        expect(
            page.locator(".CodeMirror .cm-atom, .CodeMirror .cm-string, .CodeMirror .cm-comment").first
        ).to_be_visible(timeout=SLOW)

        # A mistake: the message names the line, and the editor marks it.
        spec = page.input_value("#id_network_spec")
        line = next(i for i, text in enumerate(spec.splitlines(), 1) if "type: dense" in text)
        set_editor(page, spec.replace("type: dense", "type: dnse", 1))
        page.click("#visualize")
        expect(page.locator("#visualize-error")).to_contain_text(f"Line {line}: layers[5]", timeout=SLOW)
        expect(page.locator(".CodeMirror .cm-error-line")).to_have_count(1, timeout=SLOW)
        shot(page, "network-editor-error")
        set_editor(page, spec)
        page.click("#visualize")
        expect(page.locator("#visualize-error")).to_be_hidden(timeout=SLOW)
        expect(page.locator(".CodeMirror .cm-error-line")).to_have_count(0, timeout=SLOW)

        # The sweep's size follows the lists as they are typed.
        page.fill("#id_learning_rates", "0.1, 0.01, 0.001")
        page.fill("#id_batch_sizes", "32, 64")
        expect(page.locator("#sweep-count")).to_have_text(
            "This creates 6 experiments, a sweep (3 learning rates × 2 batch sizes).", timeout=SLOW
        )
        page.fill("#id_batch_sizes", "64")
        page.fill("#id_learning_rates", "0.01")
        expect(page.locator("#sweep-count")).to_have_text("This creates 1 experiment.", timeout=SLOW)

        # Save to the library through the dialog: a missing name is said beside its field.
        page.click("#save-network")
        dialog = page.locator("#save-network-dialog")
        expect(dialog).to_be_visible(timeout=SLOW)
        expect(page.locator("#save_visibility")).to_have_value("team", timeout=SLOW)
        dialog.locator("button[type=submit]").click()
        expect(page.locator("#save-error-name")).to_contain_text("required", timeout=SLOW)
        page.fill("#save_name", "lenet narrow")
        page.fill("#save_description", "LeNet for 28x28 digits")
        page.select_option("#save_visibility", "private")
        shot(page, "network-save-dialog")
        dialog.locator("button[type=submit]").click()
        expect(dialog).to_be_hidden(timeout=SLOW)
        expect(page.locator("#save-network-status")).to_have_text(
            "Saved “lenet narrow” to the network library.", timeout=SLOW
        )
        saved = SavedNetwork.objects.get(name="lenet narrow")
        assert (saved.description, saved.visibility, saved.owner) == ("LeNet for 28x28 digits", "private", gil)

        # Open it in the library, rename it, visualize it, train from it.
        page.goto(platform_server + "/networks/")
        page.click("#networks a:has-text('lenet narrow')")
        expect(page.locator(".CodeMirror")).to_be_visible(timeout=SLOW)
        page.click("#visualize")
        expect(page.locator("#total-params")).to_have_text("431.1 k", timeout=SLOW)
        page.fill("#id_name", "lenet renamed")
        page.click("#network-form button[type=submit]")
        expect(page.locator("h1")).to_have_text("lenet renamed", timeout=SLOW)
        shot(page, "network-library-detail")
        page.click("#train-with-it")
        expect(page.locator("#id_network")).to_have_value("custom", timeout=SLOW)
        expect(page.locator("#id_network_spec")).to_have_value(re.compile("name: LeNet"), timeout=SLOW)
        expect(page.locator("#total-params")).to_have_text("431.1 k", timeout=SLOW)


def test_only_the_latest_visualize_is_drawn(platform_server, monkeypatch):  # noqa: F811
    """Customize asks Visualize for the spec it loaded; a mistake typed and visualized
    before that answer comes must not be covered by it."""
    User.objects.create_user("ivo", password="ivo-password-1")
    from playwright.sync_api import expect

    with browser_page(monkeypatch) as page:
        log_in(page, platform_server, "ivo", "ivo-password-1")
        page.goto(platform_server + "/experiments/new/")

        held = held_back(page, "**/visualize/")
        page.select_option("#customize-from", "network:lenet")
        expect(page.locator("#id_network_spec")).to_have_value(re.compile("type: conv"), timeout=SLOW)
        late = wait_until_held(page, held, "a Visualize of the spec Customize loaded")

        spec = page.input_value("#id_network_spec")
        set_editor(page, spec.replace("type: dense", "type: dnse", 1))
        page.click("#visualize")
        expect(page.locator("#visualize-error")).to_contain_text("dnse", timeout=SLOW)
        late.continue_()  # the answer for the spec as it was
        page.wait_for_timeout(1000)
        expect(page.locator("#visualize-error")).to_contain_text("dnse")
        expect(page.locator("#network-table tr.failed-layer")).to_have_count(1)
