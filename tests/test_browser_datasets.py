"""A team's own images, from the browser: upload a zip of class folders, watch the build's
progress arrive over the WebSocket, open the gallery.  Real Chromium, web tier and worker."""

import json
import re

import pytest

from accounts.models import Membership, Team, User
from tests.browser import browser_page, log_in, platform_server, shot  # noqa: F401 - platform_server is a fixture
from tests.dataset_fixtures import color_tree, zip_of

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_upload_a_zip_watch_it_build_and_explore_it(platform_server, tmp_path, monkeypatch):  # noqa: F811
    erin = User.objects.create_user("erin", password="erin-password-1")
    Membership.objects.create(user=erin, team=Team.objects.create(name="Optics"), role=Membership.Role.ADMIN)
    archive = tmp_path / "shapes.zip"
    archive.write_bytes(zip_of(color_tree(per_class=40, prefix="shapes/")))
    from playwright.sync_api import expect

    with browser_page(monkeypatch) as page:
        events = []
        page.on("websocket", lambda ws: ws.on("framereceived", lambda frame: events.append(json.loads(frame))))

        log_in(page, platform_server, "erin", "erin-password-1")
        page.click("text=New dataset")

        page.fill("#id_name", "Shapes")
        page.check("input[name=source_type][value=archive]")
        page.set_input_files("#id_archive", str(archive))
        page.select_option("#id_channels", "3")
        page.fill("#id_width", "32")
        page.fill("#id_height", "32")
        page.fill("#id_test_percent", "10")
        # The preview reads the first image out of the zip in the browser, before any upload.
        expect(page.locator("#preview-name")).to_have_text("000.png")
        expect(page.locator(".ds-mode[data-mode=fill] img")).to_have_attribute(
            "src", re.compile("^data:image/png;base64,")
        )
        page.click(".ds-mode[data-mode=fill]")
        expect(page.locator("#id_resize_mode")).to_have_value("fill")
        page.select_option("#id_visibility", "team")
        page.select_option("#id_team", label="Optics")
        page.click("#create")

        expect(page.locator("#status")).to_have_text("Ready", timeout=120_000)
        progress = [e for e in events if e.get("type") == "progress" and e.get("total")]
        assert progress and progress[-1]["done"] == progress[-1]["total"] == 120, progress
        assert any(e.get("type") == "log" and "Extracted 120 images" in e.get("message", "") for e in events)
        expect(page.locator("#build-log")).to_contain_text("Done: 120 images")
        # The class charts are drawn once the finished dataset's figures arrive.
        page.wait_for_function("window.Chart && Chart.getChart('chart-train')")
        assert page.evaluate("Chart.getChart('chart-train').data.datasets[0].data.length") == 3
        expect(page.locator("#mean-image")).to_be_visible()
        shot(page, "dataset-archive")

        page.click("text=Explore the images")
        expect(page.locator("#gallery li")).to_have_count(min(60, 120 - 24 - 12))
        page.select_option("select[name=class]", label="green")
        expect(page.locator("#gallery li span").first).to_have_text("green")
        thumbnail = page.locator("#gallery img").first
        expect(thumbnail).to_have_js_property("complete", True)
        assert page.evaluate("document.querySelector('#gallery img').naturalWidth") == 32
        shot(page, "dataset-gallery")
