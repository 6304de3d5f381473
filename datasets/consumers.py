from datasets.models import Dataset
from jobs.events import GroupConsumer


class DatasetConsumer(GroupConsumer):
    """Build progress, log and status of one dataset."""

    def get_object(self, user, pk):
        return Dataset.objects.visible_to(user).filter(pk=pk).first()

    def current_events(self, dataset):
        dataset.refresh_from_db()
        return [
            {"type": "progress", "phase": "", "done": dataset.progress_done, "total": dataset.progress_total,
             "images_per_second": 0, "eta_seconds": None},
            *(line.as_event() for line in dataset.log_lines.all()),
            dataset.status_event(),
        ]  # fmt: skip
