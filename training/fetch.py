"""Fetch one image from a URL a user typed, without letting the URL reach inside.

The request leaves the web server, so whoever types the URL chooses where the server
connects: a loopback admin port, a database on the private network, the cloud's metadata
service. Every URL, the first and each redirect, must be http or https and name a host
whose every address is public; the connection then goes to the address that was checked
(the name is not looked up again, so a DNS answer cannot change between the check and the
connection), while the Host header and the TLS certificate check still use the name.
Redirects are followed here, one at a time, at most ``max_redirects``. The body is
streamed and given up as soon as it passes ``max_bytes``; the connection has its own
timeout and the whole exchange a deadline. An installation may name hosts that are let
through the address check (a test server, an internal image store) in ``allowed_hosts``,
as "host" or "host:port".

No Django here: the caller passes the limits it read from its settings.
"""

from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import socket
import threading
import time
import urllib.parse

# Cloud metadata services: link-local or private anyway, named so the refusal says what they are.
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
REDIRECTS = {301, 302, 303, 307, 308}
# What a server may call an image. Many image hosts say octet-stream; the decoder decides then.
IMAGE_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")
CHUNK = 64 * 1024


class FetchError(Exception):
    """The URL was refused or the download failed; the message is for the user."""


@dataclasses.dataclass(frozen=True)
class Limits:
    max_bytes: int = 10 * 1024 * 1024
    connect_timeout: float = 5.0  # seconds to open each connection
    total_timeout: float = 15.0  # seconds for everything, redirects included
    max_redirects: int = 3
    allowed_hosts: tuple[str, ...] = ()  # "host" or "host:port", let through the address check


def fetch(url: str, limits: Limits | None = None) -> bytes:
    """The body of an image at ``url``. Raises FetchError saying which rule refused it."""
    limits = limits or Limits()
    deadline = time.monotonic() + limits.total_timeout
    for _ in range(limits.max_redirects + 1):
        target = _check_url(url)
        address = _checked_address(target, limits)
        status, location, body = _get(target, address, limits, deadline)
        if status not in REDIRECTS:
            return body
        if not location:
            raise FetchError(f"The server answered {status} (a redirect) without saying where to.")
        url = urllib.parse.urljoin(url, location)
    raise FetchError(f"refused: more than {limits.max_redirects} redirects.")


@dataclasses.dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str


def _check_url(url: str) -> _Target:
    url = (url or "").strip()
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise FetchError("This is not a valid URL.") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        shown = f"{scheme}:// URLs" if scheme else "URLs without http:// or https://"
        raise FetchError(f"refused: only http:// and https:// URLs can be fetched, not {shown}.")
    if not parts.hostname:
        raise FetchError("This URL names no host.")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return _Target(scheme, parts.hostname, port or (443 if scheme == "https" else 80), path)


def _checked_address(target: _Target, limits: Limits) -> str:
    """The address to connect to: the host's first, once all of them passed the check."""
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise FetchError(f"The host {target.host} could not be found.") from None
    addresses = [info[4][0] for info in infos]
    if not addresses:
        raise FetchError(f"The host {target.host} could not be found.")
    if not _allowed(target, limits.allowed_hosts):
        # Every address, not only the one used: a name with one public and one private
        # address is refused rather than trusted to resolve the same way twice.
        for address in addresses:
            reason = refusal(address)
            if reason:
                raise FetchError(f"refused: {reason}.")
    return addresses[0]


def refusal(address: str) -> str | None:
    """Why the server must not connect to ``address``, or None for a public address."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address dressed as IPv6 (::ffff:127.0.0.1) reaches the IPv4 host.
        ip = ip.ipv4_mapped or ip.sixtofour or ip
    for test, words in (
        (lambda: ip in METADATA_ADDRESSES, "a cloud metadata address"),
        (lambda: ip.is_unspecified, "an unspecified address"),
        (lambda: ip.is_loopback, "a loopback address"),
        (lambda: ip.is_link_local, "a link-local address"),
        (lambda: ip.is_multicast, "a multicast address"),
        (lambda: ip.is_reserved, "a reserved address"),
        (lambda: ip.is_private, "a private address"),
        (lambda: not ip.is_global, "not a public address"),
    ):
        if test():
            return f"{address} is {words}"
    return None


def _allowed(target: _Target, allowed_hosts) -> bool:
    for entry in allowed_hosts:
        try:
            parts = urllib.parse.urlsplit("//" + entry.strip())
            host, port = parts.hostname, parts.port
        except ValueError:
            continue
        if host == target.host.lower() and port in (None, target.port):
            return True
    return False


def _get(target: _Target, address: str, limits: Limits, deadline: float) -> tuple[int, str | None, bytes]:
    """One GET to ``address``: (status, Location header, body of a 2xx answer)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _timed_out(limits)
    kind = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
    connection = kind(target.host, target.port, timeout=min(limits.connect_timeout, remaining))

    def connect_to_checked_address(_address, timeout, source_address=None):
        # http.client would resolve target.host again; this is the address that passed.
        return socket.create_connection((address, target.port), timeout, source_address)

    connection._create_connection = connect_to_checked_address
    # The deadline covers a server that trickles bytes: each read's timeout alone would not.
    expired = threading.Event()
    timer = threading.Timer(remaining, _expire, (connection, expired))
    timer.start()
    try:
        try:
            connection.connect()
        except TimeoutError:
            raise FetchError(
                f"The server at {target.host} did not accept a connection within {limits.connect_timeout:g} s."
            ) from None
        connection.sock.settimeout(max(0.01, deadline - time.monotonic()))
        connection.request("GET", target.path, headers={"Accept": "image/*", "User-Agent": "platform-classify"})
        response = connection.getresponse()
        if response.status in REDIRECTS:
            return response.status, response.getheader("Location"), b""
        if not 200 <= response.status < 300:
            raise FetchError(f"The server answered {response.status} {response.reason}.")
        content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        if content_type and not content_type.startswith(IMAGE_TYPES):
            raise FetchError(f"The URL gave {content_type}, not an image.")
        length = response.getheader("Content-Length")
        if length and length.isdigit() and int(length) > limits.max_bytes:
            raise FetchError(f"refused: the image is larger than {_size(limits.max_bytes)}.")
        body = bytearray()
        while chunk := response.read(CHUNK):
            body += chunk
            if len(body) > limits.max_bytes:
                raise FetchError(f"refused: the image is larger than {_size(limits.max_bytes)}.")
        if expired.is_set():  # the deadline cut the body short
            raise _timed_out(limits)
        return response.status, None, bytes(body)
    except FetchError:
        raise
    except TimeoutError:
        raise _timed_out(limits) from None
    except (OSError, http.client.HTTPException) as exc:
        if expired.is_set():
            raise _timed_out(limits) from None
        raise FetchError(f"The image could not be downloaded: {exc}.") from None
    finally:
        timer.cancel()
        connection.close()


def _expire(connection, expired: threading.Event) -> None:
    expired.set()
    sock = connection.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _timed_out(limits: Limits) -> FetchError:
    return FetchError(f"refused: the download took longer than {limits.total_timeout:g} s.")


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB" if n >= 1024 * 1024 else f"{n:,} bytes"
