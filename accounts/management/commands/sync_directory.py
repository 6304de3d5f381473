"""`python manage.py sync_directory`: ask the organisation's directory about everyone now, so
that leavers lose access without a login. Each part runs when it is configured:

- LDAP (LDAP_SERVER_URI): every LDAP account is looked up, those who left are deactivated and
  the others' teams refreshed from their groups (accounts.ldap_sync);
- OpenID Connect (OIDC_ISSUER, OIDC_CLIENT_ID): every session the provider logged in is
  refreshed with its refresh token, ended when the provider refuses it, and its person's teams
  refreshed from the provider's claims (accounts.oidc_refresh).

The parts are independent: one that fails does not keep the other from running. Once by
default, printing each part's summary and failing (exit 1) with the reasons when either could
not do its work. With `--every` it keeps doing it, as the Procfile's `directory` process does:
a round that fails is logged and the next one tried, and with neither part configured it
stays idle rather than exiting, since honcho (`make run`) stops every process when one of them
exits.
"""

import argparse
import logging
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from accounts import ldap, oidc
from accounts.ldap_sync import DirectoryUnreadable, sync_directory
from accounts.oidc_refresh import refresh_oidc_sessions

log = logging.getLogger("accounts.sync_directory")

NOT_CONFIGURED = (
    "Neither LDAP (LDAP_SERVER_URI) nor OpenID Connect (OIDC_ISSUER, OIDC_CLIENT_ID) is configured: "
    "there is no directory to sync with."
)
IDLE_SLEEP_SECONDS = 3600


def seconds(value):
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"a whole number of seconds, at least 1, not {value!r}")
    return number


def sync_ldap():
    """The LDAP part: (what it did, None) or (None, why nothing was changed)."""
    try:
        return str(sync_directory()), None
    except DirectoryUnreadable as error:
        return None, str(error)


def refresh_oidc():
    """The OpenID Connect part: (what it did, why some sessions could not be checked or None)."""
    summary = refresh_oidc_sessions()
    return str(summary), summary.failure()


PARTS = [
    ("LDAP", ldap.configured, sync_ldap),
    ("OpenID Connect", oidc.configured, refresh_oidc),
]


def configured_parts():
    return [(name, run) for name, configured, run in PARTS if configured()]


def run_part(name, run):
    """One part, kept apart from the other: even an unexpected error is its own (logged with
    its traceback), never the end of the round."""
    try:
        return run()
    except Exception as error:
        log.exception("The %s sync failed", name)
        return None, f"The {name} sync failed ({type(error).__name__}: {error}); see the traceback logged above."


class Command(BaseCommand):
    help = (
        "Ask the directory about everyone now: deactivate the LDAP accounts it no longer has, end the "
        "sessions the OpenID provider no longer accepts (their pages and sockets at once), and refresh "
        "everyone's team memberships from their groups."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--every",
            nargs="?",
            type=seconds,
            const=settings.DIRECTORY_SYNC_SECONDS,
            metavar="SECONDS",
            help="Keep syncing, a round every SECONDS (default DIRECTORY_SYNC_SECONDS, "
            f"{settings.DIRECTORY_SYNC_SECONDS}); a failed round is logged and the next one tried.",
        )

    def handle(self, *args, every, **options):
        if every is None:
            self.sync_once()
        else:
            try:
                self.keep_syncing(every)
            except KeyboardInterrupt:
                pass  # Ctrl-C in a terminal: stop without a traceback

    def sync_once(self):
        parts = configured_parts()
        if not parts:
            self.stdout.write(NOT_CONFIGURED)
            return
        failures = []
        for name, run in parts:
            done, failure = run_part(name, run)
            if done:
                self.stdout.write(done)
            if failure:
                failures.append(failure)
        if failures:
            raise CommandError("\n".join(failures))

    def keep_syncing(self, every):
        parts = configured_parts()
        if not parts:
            self.stdout.write(f"{NOT_CONFIGURED} Idle.")
            self.stdout.flush()  # honcho shows it now, not when a buffer fills
            while True:
                time.sleep(IDLE_SLEEP_SECONDS)
        log.info("Syncing with the directory (%s) every %d s", " and ".join(name for name, _ in parts), every)
        while True:
            sync_round(parts, every)
            time.sleep(every)


def sync_round(parts, every):
    # A long-lived process: drop a database connection that broke or aged since the last round.
    close_old_connections()
    for name, run in parts:
        done, failure = run_part(name, run)
        if done:
            log.info("%s", done)
        if failure:
            log.error("%s Trying again in %d s.", failure, every)
