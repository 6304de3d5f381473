"""What every app's JSON API shares."""

from django.contrib.auth.decorators import login_not_required


def api_view(view):
    # The API authenticates by token inside DRF; the login redirect is for pages only.
    return login_not_required(view.as_view())
