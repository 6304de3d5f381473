"""Following a job live over its WebSocket (/ws/experiments/<id>/), as the page does: after
(re)connecting, ask for the epochs after the last one seen, so nothing is missed or doubled."""

import json
import time
from urllib.parse import urlsplit

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from dlp.api import ApiError

ENDED = ("done", "failed", "aborted")
# The server's close codes that reconnecting cannot help (jobs.events).
CLOSE_NOT_FOUND = 4404
CLOSE_ACCESS_LOST = 4403
SILENCE = 30  # seconds without a message before the socket is asked again for what it missed
RETRIES = 10


def socket_url(client, path):
    parts = urlsplit(client.url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path}{path.lstrip('/')}"


def follow_experiment(client, pk, on_event):
    """Calls `on_event(event)` for every new epoch and status until the experiment ends; the
    last status event is returned."""
    url = socket_url(client, f"ws/experiments/{pk}/")
    parts = urlsplit(client.url)
    headers = {"Authorization": f"Token {client.token}"}
    last_epoch, failures = -1.0, 0
    while True:
        try:
            with connect(
                url, origin=f"{parts.scheme}://{parts.netloc}", additional_headers=headers, open_timeout=15
            ) as socket:
                socket.send(json.dumps({"after_epoch": last_epoch}))
                while True:
                    try:
                        message = socket.recv(timeout=SILENCE)
                    except TimeoutError:
                        socket.send(json.dumps({"after_epoch": last_epoch}))
                        continue
                    failures = 0
                    event = json.loads(message)
                    if event.get("type") == "epoch":
                        if event["epoch"] <= last_epoch:
                            continue  # sent live and again by the refill
                        last_epoch = event["epoch"]
                    on_event(event)
                    if event.get("type") == "status" and event.get("status") in ENDED:
                        return event
        except InvalidStatus as exc:
            # A refused handshake says nothing more (no such experiment, a bad token, a foreign
            # Origin): the API says what is wrong, if it is one of the first two.
            client.get(f"experiments/{pk}/")
            raise ApiError(
                f"The server refused the socket of experiment {pk} ({exc.response.status_code}); "
                f"is {client.url} the address the platform is served at?"
            ) from None
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            if code == CLOSE_NOT_FOUND:
                raise ApiError(f"No experiment {pk} that you may see.") from None
            if code == CLOSE_ACCESS_LOST:
                raise ApiError(f"You may no longer see experiment {pk}.") from None
            failures += 1
            if failures > RETRIES:
                raise ApiError(f"The socket of experiment {pk} keeps closing ({code}).") from None
        except (OSError, InvalidHandshake) as exc:
            failures += 1
            if failures > RETRIES:
                raise ApiError(f"Cannot follow experiment {pk} at {url}: {exc}") from None
        time.sleep(1)  # then reconnect and refill
