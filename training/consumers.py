from channels.db import database_sync_to_async

from jobs.events import GroupConsumer
from training.models import EpochMetric, Experiment


class ExperimentConsumer(GroupConsumer):
    """Epoch metrics and status changes of one experiment.

    A client that reconnects sends {"after_epoch": N} and gets every epoch it missed,
    then the current status, so its chart has no gaps.
    """

    def get_object(self, user, pk):
        return Experiment.objects.visible_to(user).filter(pk=pk).first()

    async def receive_json(self, content):
        after = content.get("after_epoch")
        # Epochs can be fractional (validations within an epoch); true and false are not numbers here.
        if isinstance(after, bool) or not isinstance(after, int | float):
            return
        for event in await database_sync_to_async(self._since)(after):
            await self.send_json(event)

    def _since(self, after):
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
        return events
