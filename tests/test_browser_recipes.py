"""The new-experiment page fills in each network's default recipe, in a real Chromium
against the real web tier."""

import pytest

from accounts.models import User
from tests.browser import browser_page, held_back, log_in, platform_server, wait_until_held  # noqa: F401 - platform_server is a fixture
from training import recipes

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_choosing_a_network_or_a_length_fills_in_its_recipe(platform_server, monkeypatch):  # noqa: F811
    User.objects.create_user("gus", password="gus-password-1")
    from playwright.sync_api import expect

    with browser_page(monkeypatch) as page:
        log_in(page, platform_server, "gus", "gus-password-1")
        page.goto(platform_server + "/experiments/new/")
        lenet = recipes.RECIPES["lenet"]
        expect(page.locator("#id_solver")).to_have_value(lenet.solver)
        expect(page.locator("#recipe-summary")).to_contain_text("Recipe for LeNet, 30 epochs")

        page.select_option("#id_network", "resnet")
        expect(page.locator("#id_solver")).to_have_value("sgd")
        expect(page.locator("#id_learning_rates")).to_have_value("0.1")
        expect(page.locator("#id_weight_decay")).to_have_value("0.0001")
        expect(page.locator("#id_lr_policy")).to_have_value("cosine")
        expect(page.locator("#id_warmup")).to_have_value("3.3")  # one epoch of 30
        expect(page.locator("#recipe-summary")).to_contain_text("Recipe for ResNet-20, 30 epochs")

        # A shorter run: the warm-up is capped at a tenth of it.
        page.fill("#id_epochs", "3")
        page.locator("#id_epochs").dispatch_event("change")
        expect(page.locator("#id_warmup")).to_have_value("10")
        expect(page.locator("#recipe-summary")).to_contain_text("ResNet-20, 3 epochs")

        # A field changed by hand is kept when the length changes, and the page says so.
        page.select_option("#id_solver", "adam")
        expect(page.locator("#recipe-summary")).to_contain_text("Changed from the default")
        page.fill("#id_epochs", "20")
        page.locator("#id_epochs").dispatch_event("change")
        expect(page.locator("#recipe-summary")).to_contain_text("ResNet-20, 20 epochs")
        expect(page.locator("#id_solver")).to_have_value("adam")
        expect(page.locator("#id_warmup")).to_have_value("10")


def test_a_rate_typed_while_the_recipe_is_on_its_way_is_kept(platform_server, monkeypatch):  # noqa: F811
    User.objects.create_user("hal", password="hal-password-1")
    from playwright.sync_api import expect

    with browser_page(monkeypatch) as page:
        log_in(page, platform_server, "hal", "hal-password-1")
        page.goto(platform_server + "/experiments/new/")
        expect(page.locator("#recipe-summary")).to_contain_text("Recipe for LeNet, 30 epochs")

        # The answer for the new length is held back until the person has typed a rate.
        held = []
        page.route("**/lr-preview/?recipe=1*", lambda route: held.append(route))
        page.fill("#id_epochs", "3")
        page.locator("#id_epochs").dispatch_event("change")
        for _ in range(200):  # Playwright hands the route over while the page is waited on
            if held:
                break
            page.wait_for_timeout(50)
        assert len(held) == 1, "the page did not ask for the new length's recipe"
        page.fill("#id_learning_rates", "0.0042")  # leaving the epochs field asks once more
        page.wait_for_timeout(200)
        for route in held:
            route.continue_()
        page.unroute("**/lr-preview/?recipe=1*")
        expect(page.locator("#recipe-summary")).to_contain_text("LeNet, 3 epochs")
        expect(page.locator("#recipe-summary")).to_contain_text("Changed from the default")
        expect(page.locator("#id_learning_rates")).to_have_value("0.0042")


def test_the_rate_chart_draws_the_latest_preview(platform_server, monkeypatch):  # noqa: F811
    """A preview answered late, for a rate since changed, is not drawn over the newer one."""
    User.objects.create_user("ida", password="ida-password-1")
    from playwright.sync_api import expect

    with browser_page(monkeypatch) as page:
        log_in(page, platform_server, "ida", "ida-password-1")
        page.goto(platform_server + "/experiments/new/")
        expect(page.locator("#recipe-summary")).to_contain_text("Recipe for LeNet, 30 epochs")
        page.select_option("#id_lr_policy", "fixed")
        page.wait_for_function("Chart.getChart('lr-preview').data.datasets[0].data.every((p) => p.y === 0.003)")

        held = held_back(page, "**/lr-preview/?learning_rates=0.5*")
        page.fill("#id_learning_rates", "0.5")
        page.locator("#id_learning_rates").dispatch_event("change")
        late = wait_until_held(page, held, "a preview of the new rate")
        page.fill("#id_learning_rates", "0.25")
        page.locator("#id_learning_rates").dispatch_event("change")
        page.wait_for_function("Chart.getChart('lr-preview').data.datasets[0].data.every((p) => p.y === 0.25)")
        page.wait_for_timeout(600)  # past the typing's own preview, a quarter second after it
        late.continue_()
        page.wait_for_timeout(1000)
        assert page.evaluate("Chart.getChart('lr-preview').data.datasets[0].data.every((p) => p.y === 0.25)")
