"""Production mode: DEBUG off, hashed static files from collectstatic served by the app
itself, and the settings pass Django's deployment checks."""

import os
import subprocess
import sys

from tests.conftest import ROOT

PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings",
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "a-long-random-production-secret-key-for-the-test-0123456789abcdef",
}


def run(code_or_args, env):
    args = [sys.executable, *code_or_args] if isinstance(code_or_args, list) else [sys.executable, "-c", code_or_args]
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_static_files_are_served_with_debug_off(tmp_path):
    env = {**os.environ, **PRODUCTION_ENV, "STATIC_ROOT": str(tmp_path / "static")}
    collected = run(["manage.py", "collectstatic", "--no-input", "-v", "0"], env)
    assert collected.returncode == 0, collected.stderr

    code = (
        "import django; django.setup();"
        "from django.templatetags.static import static; from django.test import Client;"
        "url = static('vendor/chart.umd.min.js'); response = Client().get(url);"
        "print(url, response.status_code, b''.join(response.streaming_content)[:40])"
    )
    served = run(code, env)
    assert served.returncode == 0, served.stderr
    url, status, head = served.stdout.split(" ", 2)
    # A hashed name, so browsers may cache it forever.
    assert url.startswith("/static/vendor/chart.umd.min.") and url != "/static/vendor/chart.umd.min.js"
    assert status == "200"
    assert "Chart.js" in head or "chart" in head.lower()


def test_production_settings_pass_the_deploy_checks():
    env = {
        **os.environ,
        **PRODUCTION_ENV,
        "DJANGO_SECURE_COOKIES": "1",
        "DJANGO_SSL_REDIRECT": "1",
        "DJANGO_HSTS_SECONDS": "31536000",
        "DJANGO_HSTS_INCLUDE_SUBDOMAINS": "1",
        "DJANGO_HSTS_PRELOAD": "1",
    }
    checked = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_without_a_secret_key_production_refuses_to_start():
    env = {**os.environ, **PRODUCTION_ENV, "DJANGO_SECRET_KEY": ""}
    checked = run(["manage.py", "check"], env)
    assert checked.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in checked.stderr
