"""Live events: workers send them to a channel group, consumers forward them to browsers.

An event is a JSON-able dict with a "type" ("epoch", "status", "progress"); the page
renders the same shape from the database on load, so a reconnecting client can refill
what it missed.
"""

import logging

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

# Close codes a client can tell apart from a network drop (4000-4999 are ours).
CLOSE_NOT_FOUND = 4404


def broadcast(group, event):
    """Send from sync code (a worker). A lost event is refilled from the database by the
    page, so a Redis hiccup must not fail the job that produced it."""
    try:
        async_to_sync(get_channel_layer().group_send)(group, {"type": "forward", "event": event})
    except Exception:
        log.exception("could not broadcast %s to %s", event.get("type"), group)


class GroupConsumer(AsyncJsonWebsocketConsumer):
    """Joins the group of one object the user may see; closes for anyone else."""

    def get_object(self, user, pk):
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
        self.group = self.group_for(obj)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        for event in await database_sync_to_async(self.current_events)(obj):
            await self.send_json(event)

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def forward(self, message):
        await self.send_json(message["event"])
