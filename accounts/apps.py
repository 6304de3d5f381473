from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self):
        # Their signal receivers count and log logins, and end a leaver's sessions.
        from accounts import audit, ratelimit, sessions  # noqa: F401
