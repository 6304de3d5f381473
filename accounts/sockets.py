"""WebSockets authenticated by an API token, for scripts that follow a job live.

A socket that sends `Authorization: Token <secret>` is the token's user, under the same rule
as the API (accounts.tokens): a wrong, expired or deactivated user's token is refused at the
handshake. A read-only token may follow: a socket only reads. A socket without the header
keeps the browser session's user. A page cannot send this header on a WebSocket, so it adds
no way for another site to open a socket in someone's name.
"""

from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from rest_framework import exceptions

from accounts.tokens import TokenAuthentication


class TokenAuthMiddleware:
    """ASGI middleware, inside the session's AuthMiddlewareStack: a token overrides the session."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            secret = _token_secret(scope)
            if secret is not None:
                user, token_id = await database_sync_to_async(_user_of)(secret)
                if user is None:
                    return await WebsocketDenier()(scope, receive, send)
                # The token's id, so that revoking it closes the socket (accounts.sessions).
                scope = {**scope, "user": user, "auth": "token", "token_id": token_id}
        return await self.application(scope, receive, send)


def _token_secret(scope):
    """The secret of an `Authorization: Token <secret>` header; "" for a malformed one, None
    when there is no such header."""
    for name, value in scope.get("headers", []):
        if name.lower() == b"authorization":
            keyword, _, secret = value.decode("latin1").strip().partition(" ")
            if keyword.lower() != "token":
                return None
            return secret.strip()
    return None


def _user_of(secret):
    """(user, token id) for a valid token; (None, None) otherwise."""
    if not secret:
        return None, None
    try:
        user, token = TokenAuthentication().authenticate_credentials(secret)
    except exceptions.AuthenticationFailed:
        return None, None
    return user, token.pk
