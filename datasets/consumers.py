from config.events import GroupConsumer
from datasets.models import Dataset


class DatasetConsumer(GroupConsumer):
    """Build progress of one dataset."""

    def get_object(self, user, pk):
        return Dataset.objects.visible_to(user).filter(pk=pk).first()

    def current_events(self, dataset):
        dataset.refresh_from_db()
        return [
            {"type": "progress", "done": dataset.progress_done, "total": dataset.progress_total,
             "images_per_second": 0, "eta_seconds": None},
            {"type": "status", "status": dataset.status, "error": dataset.error},
        ]  # fmt: skip
