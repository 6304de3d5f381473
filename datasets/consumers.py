import asyncio
import contextlib

from channels.db import database_sync_to_async

from datasets.models import Dataset
from jobs.events import GroupConsumer

# How often a connected page has the build's job checked: a killed worker sends nothing.
JOB_CHECK_SECONDS = 10


class DatasetConsumer(GroupConsumer):
    """Build progress and log of one dataset."""

    def get_object(self, user, pk):
        return Dataset.objects.visible_to(user).filter(pk=pk).first()

    def current_events(self, dataset):
        dataset.refresh_from_db()
        dataset.check_job()
        return [
            {"type": "progress", "phase": "", "done": dataset.progress_done, "total": dataset.progress_total,
             "images_per_second": 0, "eta_seconds": None},
            {"type": "log", "text": dataset.log},
            {"type": "status", "status": dataset.status, "error": dataset.error},
        ]  # fmt: skip

    async def connect(self):
        await super().connect()
        if hasattr(self, "object"):
            self.watchdog = asyncio.ensure_future(self._watch_job())

    async def disconnect(self, code):
        if hasattr(self, "watchdog"):
            self.watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watchdog
        await super().disconnect(code)

    async def _watch_job(self):
        # check_job broadcasts the failure to the group, this socket included.
        while await database_sync_to_async(self._still_building)():
            await asyncio.sleep(JOB_CHECK_SECONDS)

    def _still_building(self):
        dataset = Dataset.objects.filter(pk=self.object.pk).first()
        return dataset is not None and not dataset.is_finished and not dataset.check_job()
