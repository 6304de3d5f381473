"""`python manage.py sync_directory`: look every LDAP account up in the directory now
(accounts.ldap_sync), deactivating those who left and refreshing the others' teams.

Once by default, failing with the directory's error when it cannot be read. With `--every`
it keeps doing it, as the Procfile's `directory` process does: a round that fails is logged
and the next one tried, and without LDAP configured it stays idle rather than exiting, since
honcho (`make run`) stops every process when one of them exits.
"""

import argparse
import logging
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import close_old_connections

from accounts import ldap
from accounts.ldap_sync import DirectoryUnreadable, sync_directory

log = logging.getLogger("accounts.sync_directory")

NOT_CONFIGURED = "LDAP is not configured (LDAP_SERVER_URI is empty): there is no directory to sync with."
IDLE_SLEEP_SECONDS = 3600


def seconds(value):
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"a whole number of seconds, at least 1, not {value!r}")
    return number


class Command(BaseCommand):
    help = (
        "Look every active LDAP account up in the directory: deactivate those it no longer has (ending "
        "their sessions, tokens and sockets) and refresh the others' team memberships from their groups."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--every",
            nargs="?",
            type=seconds,
            const=settings.LDAP_SYNC_SECONDS,
            metavar="SECONDS",
            help=f"Keep syncing, a round every SECONDS (default LDAP_SYNC_SECONDS, {settings.LDAP_SYNC_SECONDS}); "
            "a failed round is logged and the next one tried.",
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
        if not ldap.configured():
            self.stdout.write(NOT_CONFIGURED)
            return
        try:
            summary = sync_directory()
        except DirectoryUnreadable as error:
            raise CommandError(str(error)) from error
        self.stdout.write(str(summary))

    def keep_syncing(self, every):
        if not ldap.configured():
            self.stdout.write(f"{NOT_CONFIGURED} Idle.")
            self.stdout.flush()  # honcho shows it now, not when a buffer fills
            while True:
                time.sleep(IDLE_SLEEP_SECONDS)
        log.info("Syncing the LDAP accounts with %s every %d s", settings.LDAP_SERVER_URI, every)
        while True:
            sync_round(every)
            time.sleep(every)


def sync_round(every):
    # A long-lived process: drop a database connection that broke or aged since the last round.
    close_old_connections()
    try:
        summary = sync_directory()
    except DirectoryUnreadable as error:
        log.error("%s Trying again in %d s.", error, every)
    except Exception:
        log.exception("The directory sync failed; trying again in %d s", every)
    else:
        log.info("%s", summary)
