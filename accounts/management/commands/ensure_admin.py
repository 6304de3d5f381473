import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the first admin account if there is none, and say how to log in."

    def add_arguments(self, parser):
        parser.add_argument("--username", default=os.environ.get("DJANGO_SUPERUSER_USERNAME", "admin"))

    def handle(self, *args, username, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write(
                f"  Log in as an existing admin (e.g. {username}); forgot it? manage.py changepassword {username}"
            )
            return
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        shown = "(from DJANGO_SUPERUSER_PASSWORD)"
        if not password:
            password = secrets.token_urlsafe(12)
            shown = f"{password}   <- shown this once; write it down"
        User.objects.create_superuser(username=username, email="", password=password)
        self.stdout.write(self.style.SUCCESS(f"  Created the admin account.\n  Login: {username}\n  Password: {shown}"))
