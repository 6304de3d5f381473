"""Which pages may open a WebSocket: this site's own, and the trusted origins.

A browser sends the session cookie with a WebSocket to any site, whichever page opens it, and
WebSockets have no CSRF token: the Origin header is the only thing that tells our page from
another. It is compared whole — scheme, host and port — as Django's CSRF check compares it
for forms: another port on the same host is another site (another program, maybe another
user's). The Host must also be one of ALLOWED_HOSTS, so that a page on a domain that resolves
to this server (DNS rebinding) is not taken for our own. A request without Origin is refused:
browsers always send one, so only a non-browser client leaves it out, and such a client can
send any Origin it likes anyway.
"""

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain

DEFAULT_PORTS = {"http": 80, "https": 443}


class SameOriginValidator:
    """ASGI middleware: lets a WebSocket through only from an allowed origin."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)


def origin_allowed(scope):
    headers = {name.lower(): value.decode("latin1") for name, value in scope.get("headers", [])}
    origin = _origin(headers.get(b"origin", ""))
    if origin is None:
        return False
    own = _own_origin(scope, headers)
    if own is not None and origin == own:
        return True
    return any(_trusted(origin, pattern) for pattern in settings.CSRF_TRUSTED_ORIGINS)


def _origin(value):
    """(scheme, host, port) of an origin or URL, the port made explicit; None if it is not one."""
    try:
        parts = urlsplit(value.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return (parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme])


def _own_origin(scope, headers):
    """The site's origin as the browser sees it: the scheme of the connection (or of the proxy
    in front, when settings trust one) and the Host it asked for, if that host is allowed."""
    host = headers.get(b"host", "")
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, _allowed_hosts()):
        return None
    scheme = "https" if scope.get("scheme") in ("wss", "https") else "http"
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name, secure_value = proxy
        header = name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin1")
        if header in headers:
            scheme = "https" if headers[header].split(",")[0].strip() == secure_value else "http"
    return _origin(f"{scheme}://{host}")


def _allowed_hosts():
    # As Django's request.get_host(): with DEBUG and no ALLOWED_HOSTS, the local names.
    if settings.DEBUG and not settings.ALLOWED_HOSTS:
        return [".localhost", "127.0.0.1", "[::1]"]
    return settings.ALLOWED_HOSTS


def _trusted(origin, pattern):
    """A CSRF_TRUSTED_ORIGINS entry: "https://example.com", with a port or not, or
    "https://*.example.com" for its subdomains (as Django's CSRF check reads them)."""
    scheme, _, netloc = pattern.lower().partition("://")
    if not netloc.startswith("*"):
        return origin == _origin(pattern)
    domain, port = split_domain_port(netloc.lstrip("*"))  # ".example.com": it and its subdomains
    if scheme not in DEFAULT_PORTS or not domain:
        return False
    wanted_port = int(port) if port.isdigit() else DEFAULT_PORTS[scheme]
    return origin[0] == scheme and origin[2] == wanted_port and is_same_domain(origin[1], domain)
