"""A running job's heartbeat: a thread that stamps the row every few seconds whatever the
job is doing (a long compile included). A stale heartbeat is how recovery on another host
tells a dead worker from a slow one."""

import logging
import threading

from django.db import close_old_connections, connection
from django.utils import timezone

from jobs.models import JobStatus

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0


class Heartbeat(threading.Thread):
    def __init__(self, job, every=HEARTBEAT_SECONDS):
        super().__init__(name=f"heartbeat-{job.group_name}", daemon=True)
        self.model, self.pk = type(job), job.pk
        self.every = every
        self.stopped = threading.Event()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def run(self):
        try:
            while not self.stopped.is_set():
                try:
                    close_old_connections()
                    self.model._base_manager.filter(pk=self.pk, status=JobStatus.RUNNING).update(
                        heartbeat=timezone.now(), **self.extra_fields()
                    )
                    self.beaten()
                except Exception:
                    log.exception("%s %s: heartbeat failed", self.model._meta.verbose_name, self.pk)
                self.stopped.wait(self.every)
        finally:
            connection.close()

    def extra_fields(self):
        """More columns to write with each beat."""
        return {}

    def beaten(self):
        """After each beat."""

    def stop(self):
        self.stopped.set()
        self.join(timeout=self.every * 2)
