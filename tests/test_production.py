"""Production mode: DEBUG off, hashed static files from collectstatic served by the app
itself, and the settings pass Django's deployment checks."""

import os
import re
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


def readme_production_env():
    """The variables the README's production block sets, its placeholder secret filled in."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"\*\*In production\*\*.*?```sh\n(.*?)```", readme, re.DOTALL)
    assert block, "README.md lost its production block"
    env = dict(line.split("#")[0].strip().split("=", 1) for line in block[1].splitlines() if line.strip())
    assert env["DJANGO_SECRET_KEY"].startswith("<")
    return {**env, "DJANGO_SECRET_KEY": PRODUCTION_ENV["DJANGO_SECRET_KEY"]}


def test_the_readme_production_settings_pass_the_deploy_checks():
    env = {**os.environ, **PRODUCTION_ENV, **readme_production_env()}
    checked = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "WARNING" not in checked.stdout + checked.stderr
    assert "no issues" in checked.stdout


def test_without_the_production_block_the_deploy_checks_warn():
    # The block is what makes them pass, not a lenient check.
    checked = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], {**os.environ, **PRODUCTION_ENV})
    assert checked.returncode != 0
    assert "security.W008" in checked.stderr and "security.W012" in checked.stderr


IS_SECURE = (
    "import django; django.setup(); from django.test import RequestFactory;"
    "print(RequestFactory().get('/', headers={'x-forwarded-proto': 'https'}).is_secure())"
)


def test_a_client_cannot_claim_https_with_a_header():
    checked = run(IS_SECURE, {**os.environ, **PRODUCTION_ENV})
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "False"


def test_behind_a_proxy_its_forwarded_protocol_counts():
    checked = run(IS_SECURE, {**os.environ, **PRODUCTION_ENV, "DJANGO_BEHIND_PROXY": "1"})
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == "True"


MAIL = "import django; django.setup(); from django.conf import settings as s; print(s.EMAIL_BACKEND, s.EMAIL_PORT, s.EMAIL_USE_TLS, s.DEFAULT_FROM_EMAIL)"  # noqa: E501


def test_without_a_mail_server_email_goes_to_the_log():
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMAIL_")}
    checked = run(MAIL, {**env, **PRODUCTION_ENV})
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.split()[0] == "django.core.mail.backends.console.EmailBackend"


def test_with_a_mail_server_email_goes_by_smtp():
    env = {**os.environ, **PRODUCTION_ENV, "EMAIL_HOST": "mail.example.org", "EMAIL_PORT": "2525",
           "EMAIL_USE_TLS": "0", "DEFAULT_FROM_EMAIL": "platform@example.org"}  # fmt: skip
    checked = run(MAIL, env)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.split() == ["django.core.mail.backends.smtp.EmailBackend", "2525", "False",
                                      "platform@example.org"]  # fmt: skip


def test_without_a_secret_key_production_refuses_to_start():
    env = {**os.environ, **PRODUCTION_ENV, "DJANGO_SECRET_KEY": ""}
    checked = run(["manage.py", "check"], env)
    assert checked.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in checked.stderr
