"""Secrets the platform must read back later, encrypted at rest: a provider's refresh token
(accounts.oidc_refresh) is a credential, so the database holds only its Fernet ciphertext
(AES-128-CBC and an HMAC, from `cryptography`).

The key is derived from SECRET_KEY, with a purpose of its own so it is no other use's key;
SECRET_KEY_FALLBACKS still read what older keys sealed, so a key rotation done the Django
way keeps the secrets readable until they are sealed again.
"""

import base64

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.utils.crypto import salted_hmac

PURPOSE = "accounts.sealed"


class Unreadable(Exception):
    """Sealed under a key this installation no longer has (SECRET_KEY changed without
    keeping the old one in SECRET_KEY_FALLBACKS), or not sealed here at all."""


def seal(secret):
    """The ciphertext of `secret` (a str), as ASCII text for a text column."""
    return _fernet().encrypt(secret.encode()).decode("ascii")


def unseal(sealed):
    """The secret back; Unreadable when none of the installation's keys sealed it."""
    try:
        return _fernet().decrypt(sealed.encode("ascii")).decode()
    except (InvalidToken, UnicodeError) as error:
        raise Unreadable("sealed under another SECRET_KEY") from error


def _fernet():
    # Read at each use, never at import: the settings may change (and do, in tests).
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return MultiFernet([Fernet(_key(secret)) for secret in secrets])


def _key(secret):
    digest = salted_hmac(PURPOSE, "fernet", secret=secret, algorithm="sha256").digest()
    return base64.urlsafe_b64encode(digest)
