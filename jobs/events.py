"""Live events: workers send them to a channel group, consumers forward them to browsers.

An event is a JSON-able dict with a "type" ("epoch", "status", "progress"); the page
renders the same shape from the database on load, so a reconnecting client can refill
what it missed.
"""

import asyncio
import contextlib
import json
import logging

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# Close codes a client can tell apart from a network drop (4000-4999 are ours).
CLOSE_NOT_FOUND = 4404
CLOSE_ACCESS_LOST = 4403  # the user may no longer see the object: reconnecting cannot help
CLOSE_SERVER_ERROR = 1011


def broadcast(group, event):
    """Send from sync code (a worker). A lost event is refilled from the database by the
    page, so a Redis hiccup must not fail the job that produced it."""
    try:
        async_to_sync(get_channel_layer().group_send)(group, {"type": "forward", "event": event})
    except (RedisError, OSError) as exc:
        # Redis down is an expected state (the pages say so), not a crash to trace.
        log.warning("could not broadcast %s to %s: %s", event.get("type"), group, exc)
    except Exception:
        log.exception("could not broadcast %s to %s", event.get("type"), group)


class GroupConsumer(AsyncJsonWebsocketConsumer):
    """Joins the group of one object the user may see; closes for anyone else, and closes
    with CLOSE_ACCESS_LOST once the user may no longer see it.

    Access can be taken away anywhere: the object's settings page, the API, the Django
    admin, a team membership, the user's account. So the socket is not told; it asks the
    database again every `access_check_seconds`, and before it sends anything."""

    access_check_seconds = 2
    has_access = False  # until connect() finds the object

    def get_object(self, user, pk):
        """The object if `user` may see it, else None."""
        raise NotImplementedError

    def group_for(self, obj):
        return obj.group_name

    def current_events(self, obj):
        """Sent right after the socket opens, so nothing that happened between the page
        render and the connection is missed."""
        return []

    async def connect(self):
        user = self.scope.get("user")
        obj = None
        if user is not None and user.is_authenticated:
            obj = await database_sync_to_async(self.get_object)(user, self.scope["url_route"]["kwargs"]["pk"])
        if obj is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.object = obj
        self.has_access = True
        self.group = self.group_for(obj)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        self.access_watch = asyncio.ensure_future(self._watch_access())
        for event in await database_sync_to_async(self.current_events)(obj):
            await self.send_json(event)

    async def disconnect(self, code):
        watch = getattr(self, "access_watch", None)
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def forward(self, message):
        if await self.still_allowed():
            await self.send_json(message["event"])

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        """Hands receive_json only JSON objects; anything else is answered with an error event."""
        if not await self.still_allowed():
            return
        try:
            content = json.loads(text_data) if text_data is not None else None
        except ValueError:
            content = None
        if not isinstance(content, dict):
            await self.send_json({"type": "error", "error": 'Messages must be JSON objects, like {"after_epoch": 3}.'})
            return
        await self.receive_json(content, **kwargs)

    async def still_allowed(self):
        """Whether the user may still see the object, from the database; closes the socket
        when not, so nothing more is sent."""
        if not self.has_access:
            return False
        if await database_sync_to_async(self._user_may_see)():
            return True
        await self._close_for_good(CLOSE_ACCESS_LOST)
        return False

    def _user_may_see(self):
        # The user afresh: deactivated, or no longer a superuser, since the socket opened.
        user = get_user_model()._default_manager.filter(pk=self.scope["user"].pk).first()
        return user is not None and self.get_object(user, self.object.pk) is not None

    async def _close_for_good(self, code):
        if not self.has_access:
            return
        self.has_access = False
        await self.channel_layer.group_discard(self.group, self.channel_name)
        await self.close(code=code)

    async def _watch_access(self):
        try:
            while await self.still_allowed():
                await asyncio.sleep(self.access_check_seconds)
        except Exception:
            # Access that cannot be checked is not assumed; the page reconnects and is asked again.
            log.exception("could not check access to %s", self.group)
            await self._close_for_good(CLOSE_SERVER_ERROR)
