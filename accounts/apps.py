from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self):
        from accounts import audit, ratelimit  # noqa: F401  (their signal receivers count and log logins)
