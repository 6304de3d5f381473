"""Live events: workers send them to a channel group, consumers forward them to browsers.

An event is a JSON-able dict with a "type" ("epoch", "status", "progress"); the page
renders the same shape from the database on load, so a reconnecting client can refill
what it missed.

Every event sent to a group carries that group's sequence number ("seq", a counter in
Redis that only grows), so a page can tell that it missed one: channels-redis drops
messages for a socket whose queue is full, and nothing else says so. A consumer sends
{"type": "sync", "group": ..., "seq": S} after the state it read from the database: every
event up to S is in that state, and the next one it forwards is S + 1.
"""

import asyncio
import contextlib
import json
import logging
import random
import time

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from redis import Redis
from redis.exceptions import RedisError

from accounts.sessions import session_is_current

log = logging.getLogger(__name__)

# Close codes a client can tell apart from a network drop (4000-4999 are ours).
CLOSE_NOT_FOUND = 4404
CLOSE_ACCESS_LOST = 4403  # the user may no longer see the object: reconnecting cannot help
CLOSE_SERVER_ERROR = 1011


_counters = {}


def _counter_client():
    """One Redis client per process for the sequence counters (redis-py's pool is
    thread-safe and opens fresh connections after a fork)."""
    url = settings.REDIS_URL
    client = _counters.get(url)
    if client is None:
        client = _counters[url] = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    return client


def _seq_key(group):
    # The channel layer's prefix keeps test runs (and installations sharing a Redis) apart.
    return f"{settings.CHANNEL_LAYERS['default']['CONFIG'].get('prefix', 'asgi')}:seq:{group}"


def current_seqs(groups):
    """The last sequence number sent to each group (0 for one that never had an event)."""
    groups = list(groups)
    if not groups:
        return {}
    values = _counter_client().mget([_seq_key(group) for group in groups])
    return {group: int(value or 0) for group, value in zip(groups, values, strict=True)}


def _access_key():
    return f"{settings.CHANNEL_LAYERS['default']['CONFIG'].get('prefix', 'asgi')}:access-generation"


def access_changed(**kwargs):
    """Something that decides who sees what was saved or deleted (a sharing setting, a
    membership, an account, a session): every socket asks the database again, within
    `GroupConsumer.access_check_seconds` or before its next event. A signal receiver
    (jobs.apps), also called by code that changes access without saving rows one by one.

    Bumped now and again once the transaction commits: a socket that read the first bump
    and then the database before the commit saw the old rows, and must ask once more."""
    _bump_access_generation()
    if connection.in_atomic_block:
        transaction.on_commit(_bump_access_generation)


def _bump_access_generation():
    try:
        _counter_client().incr(_access_key())
    except (RedisError, OSError) as exc:
        log.warning("could not note an access change: %s", exc)


# The access generation as this process's sockets last read it: (value, time.monotonic()).
_generation = (None, -float("inf"))
GENERATION_READ_SECONDS = 0.5


async def access_generation():
    """The access generation, read from Redis at most every GENERATION_READ_SECONDS for all of
    this process's sockets; None when Redis does not answer (then each socket asks the
    database)."""
    global _generation
    value, read_at = _generation
    if time.monotonic() - read_at < GENERATION_READ_SECONDS:
        return value
    try:
        raw = await asyncio.to_thread(_counter_client().get, _access_key())
        value = int(raw or 0)
    except (RedisError, OSError):
        value = None
    _generation = (value, time.monotonic())
    return value


async def access_check_due(checked_generation, recheck_at):
    """For an idle socket: (whether it must ask the database now, the generation read). It
    must when the generation moved since its last check that passed, when Redis cannot
    tell, or at `recheck_at` (recheck_deadline(), taken when that check passed)."""
    generation = await access_generation()
    unchanged = generation is not None and generation == checked_generation and time.monotonic() < recheck_at
    return not unchanged, generation


def recheck_deadline():
    """When a check that passed now must be made again anyway (ACCESS_RECHECK_SECONDS)."""
    return time.monotonic() + settings.ACCESS_RECHECK_SECONDS


def broadcast(group, event):
    """Send from sync code (a worker). A lost event is refilled from the database by the
    page, so a Redis hiccup must not fail the job that produced it.

    The message carries the access generation read as it was sent: a socket that checked
    access at that generation forwards it without asking the database again, so a hundred
    watchers cost one check each per change of access, not one per event."""
    try:
        pipe = _counter_client().pipeline(transaction=False)
        pipe.incr(_seq_key(group))
        pipe.get(_access_key())
        seq, generation = pipe.execute()
        message = {"type": "forward", "event": event, "group": group, "seq": seq, "access": int(generation or 0)}
        async_to_sync(get_channel_layer().group_send)(group, message)
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
    database again before it sends anything, and while it is idle:

    - an event carries the access generation it was sent at (broadcast): one sent at the
      generation of the last check that passed is forwarded without asking again;
    - every `access_check_seconds` the socket reads the generation (one Redis read per web
      process, shared by all of its sockets) and asks the database when it moved; and at
      least every ACCESS_RECHECK_SECONDS, for what no save announces (an expired session
      or token, a raw UPDATE). A hundred idle watchers cost the database nothing until
      something that decides access changes."""

    access_check_seconds = 2
    has_access = False  # until connect() finds the object
    checked_generation = None  # the access generation (broadcast) of the last check that passed
    recheck_at = 0.0  # time.monotonic() by which the database must be asked again

    def get_object(self, user, pk):
        """The object if `user` may see it, else None."""
        raise NotImplementedError

    def group_for(self, obj):
        return obj.group_name

    def current_events(self, obj):
        """Sent right after the socket opens, so nothing that happened between the page
        render and the connection is missed."""
        return []

    def sync_event(self):
        """Read before the state that goes with it: every event up to this number is in
        what the database says afterwards (a worker writes its row, then broadcasts)."""
        return {"type": "sync", "group": self.group, "seq": current_seqs([self.group])[self.group]}

    def _opening_events(self, obj):
        sync = self.sync_event()
        return [*self.current_events(obj), sync]

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
        for event in await database_sync_to_async(self._opening_events)(obj):
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
        if await self.may_forward(message):
            event = message["event"]
            if "seq" in message:
                event = {**event, "group": message["group"], "seq": message["seq"]}
            await self.send_json(event)

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
            self.recheck_at = recheck_deadline()
            return True
        await self._close_for_good(CLOSE_ACCESS_LOST)
        return False

    async def access_holds(self):
        """The idle check: the database is asked only when the access generation moved since
        the last check that passed, when Redis cannot tell, or when the recheck is due."""
        due, generation = await access_check_due(self.checked_generation, self.recheck_at)
        if not due:
            return self.has_access
        allowed = await self.still_allowed()
        if allowed:
            self.checked_generation = generation
        return allowed

    async def may_forward(self, message):
        """still_allowed(), skipped when the event was sent at the access generation of the
        last check that passed."""
        generation = message.get("access")
        if self.has_access and generation is not None and generation == self.checked_generation:
            return True
        allowed = await self.still_allowed()
        if allowed and generation is not None:
            self.checked_generation = generation
        return allowed

    def _user_may_see(self):
        # The user afresh: deactivated, or no longer a superuser, since the socket opened;
        # and the session it opened with, which logging out (or leaving) ends.
        user = get_user_model()._default_manager.filter(pk=self.scope["user"].pk).first()
        if user is None or not session_is_current(self.scope):
            return False
        return self.get_object(user, self.object.pk) is not None

    async def _close_for_good(self, code):
        if not self.has_access:
            return
        self.has_access = False
        await self.channel_layer.group_discard(self.group, self.channel_name)
        await self.close(code=code)

    async def _watch_access(self):
        try:
            while await self.access_holds():
                # Jittered, so a hundred sockets opened together do not all ask at once.
                await asyncio.sleep(self.access_check_seconds * random.uniform(0.75, 1.0))
        except Exception:
            # Access that cannot be checked is not assumed; the page reconnects and is asked again.
            log.exception("could not check access to %s", self.group)
            await self._close_for_good(CLOSE_SERVER_ERROR)
