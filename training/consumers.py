import asyncio
import contextlib
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth import get_user_model

from accounts.sessions import session_is_current
from jobs import console
from jobs.events import (
    CLOSE_ACCESS_LOST,
    CLOSE_NOT_FOUND,
    CLOSE_SERVER_ERROR,
    GroupConsumer,
    access_check_due,
    current_seqs,
    recheck_deadline,
)
from training.console import live_row, visible_ids
from training.models import EpochMetric, Experiment, Sweep

log = logging.getLogger(__name__)


class ExperimentConsumer(GroupConsumer):
    """Epoch metrics and status changes of one experiment.

    A client that reconnects, or that finds a gap in the events' sequence numbers, sends
    {"after_epoch": N, "after_log": L} and gets every epoch after N and every log line after
    line L it missed, the current status, progress and snapshots, then a "sync" with the
    sequence number all that is as new as, so its chart and log have no gaps.
    """

    def get_object(self, user, pk):
        return Experiment.objects.visible_to(user).filter(pk=pk).first()

    async def receive_json(self, content):
        after = content.get("after_epoch")
        # Epochs can be fractional (validations within an epoch); true and false are not numbers here.
        if isinstance(after, bool) or not isinstance(after, int | float):
            return
        after_log = content.get("after_log")
        if isinstance(after_log, bool) or not isinstance(after_log, int):
            after_log = None
        for event in await database_sync_to_async(self._since)(after, after_log):
            await self.send_json(event)

    def _since(self, after, after_log=None):
        sync = self.sync_event()  # first: what follows is at least this new
        rows = EpochMetric.objects.filter(experiment_id=self.object.pk, epoch__gt=after).order_by("epoch")
        events = [row.as_event() for row in rows]
        experiment = Experiment.objects.get(pk=self.object.pk)
        events.append(experiment.status_event())
        # Each snapshot's latest export per format: the page compares it with what it shows
        # and fetches only the cells that changed.
        latest = {}
        for export in experiment.exports.filter(snapshot__isnull=False):
            latest.setdefault((export.snapshot_id, export.format), export)
        events.extend(export.experiment_event() for export in latest.values())
        if experiment.status == Experiment.Status.RUNNING and experiment.progress:
            events.append({"type": "progress", **experiment.progress})
        # The snapshots there are now: the page adds the new ones and drops the removed ones.
        snapshots = experiment.snapshots.order_by("-epoch").values_list("pk", "epoch")
        events.append({"type": "snapshots", "snapshots": [{"id": pk, "epoch": epoch} for pk, epoch in snapshots]})
        if after_log is not None:
            events.extend(line.as_event() for line in experiment.log_lines.filter(pk__gt=after_log).order_by("pk"))
        events.append(sync)
        return events


class ConsoleConsumer(AsyncJsonWebsocketConsumer):
    """The console's rows as they change: new experiments and datasets, their status and
    progress, runs moving from "In progress" to "Finished".

    It joins the console groups of its viewer (jobs.console.viewer_groups) and, for each
    row event heard, reads that row afresh for the viewer, under the console's filters (the
    socket's URL query is the page's): a row the viewer may not see is never sent. Every
    `access_check_seconds` it reads the viewer again: a changed team membership changes its
    groups, and a row it sent that the viewer may no longer see is taken off the page
    ("row_removed")."""

    access_check_seconds = GroupConsumer.access_check_seconds

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.query = self.scope.get("query_string", b"").decode("latin1")
        self.groups_joined = set()
        self.shown = set()  # ("experiment", pk): rows this page may show
        self.open = True
        await self.accept()
        if not await self._follow_viewer():
            return
        self.access_watch = asyncio.ensure_future(self._watch_access())

    async def disconnect(self, code):
        self.open = False
        watch = getattr(self, "access_watch", None)
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        for group in getattr(self, "groups_joined", ()):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content):
        """{"shown": ["experiment-3", "dataset-5"]}: rows the page rendered; {"refill": true}:
        the page missed an event and reads the page again, after these numbers."""
        if not isinstance(content, dict):
            return
        if isinstance(content.get("shown"), list):
            for key in content["shown"][:1000]:
                kind, _, pk = str(key).partition("-")
                if kind in ("experiment", "dataset") and pk.isdigit():
                    self.shown.add((kind, int(pk)))
        if content.get("refill") is True:
            for event in await database_sync_to_async(self._syncs)(self.groups_joined):
                await self.send_json(event)

    async def forward(self, message):
        event, group, seq = message["event"], message.get("group"), message.get("seq")
        row = None
        if event.get("type") == "row" and self.open:
            row = await database_sync_to_async(self._row)(event.get("kind"), event.get("id"))
        key = (event.get("kind"), event.get("id"))
        if row is not None:
            self.shown.add(key)
            await self.send_json({**row, "group": group, "seq": seq})
        elif key in self.shown:
            self.shown.discard(key)
            await self.send_json({"type": "row_removed", "kind": key[0], "id": key[1], "group": group, "seq": seq})
        else:
            # Nothing this viewer may see; the number still counts, or the page would take it for a loss.
            await self.send_json({"type": "skip", "group": group, "seq": seq})

    def _user(self):
        return get_user_model()._default_manager.filter(pk=self.scope["user"].pk).first()

    def _row(self, kind, pk):
        user = self._user()
        if user is None or not isinstance(pk, int):
            return None
        return live_row(user, self.query, kind, pk)

    def _syncs(self, groups):
        return [{"type": "sync", "group": group, "seq": seq} for group, seq in current_seqs(groups).items()]

    def _viewer(self):
        """The viewer's groups now, and which shown rows they may no longer see; None when the
        user is gone, deactivated or signed out."""
        user = self._user()
        if user is None or not user.is_active or not session_is_current(self.scope):
            return None
        hidden = set()
        for kind in ("experiment", "dataset"):
            ids = [pk for shown_kind, pk in self.shown if shown_kind == kind]
            hidden |= {(kind, pk) for pk in set(ids) - visible_ids(user, kind, ids)}
        return console.viewer_groups(user), hidden

    async def _follow_viewer(self):
        viewer = await database_sync_to_async(self._viewer)()
        if viewer is None:
            self.open = False
            await self.close(code=CLOSE_ACCESS_LOST)
            return False
        groups, hidden = viewer
        for group in self.groups_joined - groups:
            await self.channel_layer.group_discard(group, self.channel_name)
        added = groups - self.groups_joined
        for group in added:
            await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined = groups
        # Numbers read after joining: the page counts from them.
        for event in await database_sync_to_async(self._syncs)(added):
            await self.send_json(event)
        for kind, pk in hidden:
            self.shown.discard((kind, pk))
            await self.send_json({"type": "row_removed", "kind": kind, "id": pk})
        return True

    async def _watch_access(self):
        try:
            checked_generation, recheck_at = None, 0.0
            while True:
                await asyncio.sleep(self.access_check_seconds)
                # As GroupConsumer.access_holds: the database only when access may have changed.
                due, generation = await access_check_due(checked_generation, recheck_at)
                if not due:
                    continue
                if not await self._follow_viewer():
                    return
                checked_generation, recheck_at = generation, recheck_deadline()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not check the console's access")
            self.open = False
            await self.close(code=CLOSE_SERVER_ERROR)


class SweepConsumer(GroupConsumer):
    """The sweep page: the events of each of its experiments the user may see, tagged with
    the experiment ("experiment": pk), on one socket. {"after_epoch": {pk: N}} refills each
    member as the experiment page's refill does, for one member or all."""

    def get_object(self, user, pk):
        return Sweep.objects.visible_to(user).filter(pk=pk).first()

    def group_for(self, sweep):
        return f"sweep-{sweep.pk}"  # nothing is sent to it: the members' groups carry the events

    def _members(self):
        return list(self.object.experiments.visible_to(self.scope["user"]).values_list("pk", flat=True))

    async def connect(self):
        await super().connect()
        if not self.has_access:
            return
        self.members = set(await database_sync_to_async(self._members)())
        self.member_checked = {}  # member pk: the access generation at which it was last seen visible
        for pk in self.members:
            await self.channel_layer.group_add(f"{Experiment.group_prefix}-{pk}", self.channel_name)
        for event in await database_sync_to_async(self._syncs)(self.members):
            await self.send_json(event)

    async def disconnect(self, code):
        await super().disconnect(code)
        for pk in getattr(self, "members", ()):
            await self.channel_layer.group_discard(f"{Experiment.group_prefix}-{pk}", self.channel_name)

    def _syncs(self, members):
        groups = [f"{Experiment.group_prefix}-{pk}" for pk in members]
        return [{"type": "sync", "group": group, "seq": seq} for group, seq in current_seqs(groups).items()]

    async def forward(self, message):
        group = message.get("group") or self.group
        if group == self.group or not await self.may_forward(message):
            return
        pk = int(group.rsplit("-", 1)[1])
        if pk not in self.members:
            return
        # Each member is asked about once per access generation, as the sweep itself is.
        generation = message.get("access")
        if generation is None or self.member_checked.get(pk) != generation:
            if not await database_sync_to_async(self._may_see)(pk):
                return
            if generation is not None:
                self.member_checked[pk] = generation
        await self.send_json({**message["event"], "experiment": pk, "group": group, "seq": message.get("seq")})

    def _may_see(self, pk):
        return Experiment.objects.visible_to(self._user()).filter(pk=pk).exists()

    def _user(self):
        return get_user_model()._default_manager.filter(pk=self.scope["user"].pk).first()

    async def receive_json(self, content):
        after = content.get("after_epoch")
        if not isinstance(after, dict):
            return
        for key, epoch in list(after.items())[:200]:
            if not str(key).isdigit() or int(key) not in self.members:
                continue
            if isinstance(epoch, bool) or not isinstance(epoch, int | float):
                continue
            for event in await database_sync_to_async(self._member_since)(int(key), epoch):
                await self.send_json(event)

    def _member_since(self, pk, after):
        group = f"{Experiment.group_prefix}-{pk}"
        sync = {"type": "sync", "group": group, "seq": current_seqs([group])[group]}
        experiment = Experiment.objects.visible_to(self._user()).filter(pk=pk).first()
        if experiment is None:
            return []
        rows = experiment.metrics.filter(epoch__gt=after).order_by("epoch")
        events = [{**row.as_event(), "experiment": pk} for row in rows]
        events.append({**experiment.status_event(), "experiment": pk})
        events.append(sync)
        return events
