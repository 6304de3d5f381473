"""One lifecycle for every kind of background work: dataset builds, experiments and the
kinds that come after them.

A job is a database row (the truth) and an RQ job (a cache of work, named after the row):

    queued ──claim()──> running ──finish()──> done | failed | aborted
       ▲                   │
       └── interrupted() ──┘   (its worker died: queued again, up to JOB_MAX_ATTEMPTS runs)

Every change is a filtered UPDATE, so two workers, or a worker and a person pressing a
button, can never both win; the loser learns it from the row count. Each change is
recorded as a log row and sent to the row's group as one event shape (`status_event`).
Reading a row never changes it: finding jobs whose worker died is `jobs.recovery`'s work,
done by the workers.
"""

import contextlib
import logging
import os
import shutil
import socket

from django.conf import settings
from django.db import models, transaction
from django.db.models.functions import Coalesce
from django.db.models.signals import post_delete
from django.utils import timezone

from jobs import console, queues
from jobs.events import broadcast

log = logging.getLogger(__name__)


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    ABORTED = "aborted", "Aborted"


ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
FINISHED = (JobStatus.DONE, JobStatus.FAILED, JobStatus.ABORTED)


def this_worker():
    """Who runs a job, as "host:pid" of the RQ worker process that forked it. A worker on
    the same host can tell at once whether that process is alive; a work-horse dies with
    its worker (jobs.worker), so a dead worker means a dead job."""
    return f"{socket.gethostname()}:{os.getppid()}"


class Job(models.Model):
    """The fields and state changes every kind of background work shares.

    A subclass names its RQ entry point (`job_function`, which takes the row's id), its
    default queue and the prefix of its live group, and may refine `claim_filter`,
    `status_changed` and `resume_note`.
    """

    Status = JobStatus

    job_function = None  # "datasets.jobs.build"
    default_queue = None  # "datasets"
    group_prefix = None  # "dataset": events go to group "dataset-<id>"

    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED)
    error = models.TextField(blank=True)
    # The RQ job of the current attempt, "<prefix>-<id>-attempt-<n>": the row finds its job
    # by it, and a job finds that it is stale when the row names another.
    job_id = models.CharField(max_length=100, blank=True)
    created = models.DateTimeField(default=timezone.now)
    queued = models.DateTimeField(null=True, blank=True)
    # The first start: a resumed job keeps it.
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    # The job beats while it runs; a stale heartbeat means its worker died.
    heartbeat = models.DateTimeField(null=True, blank=True)
    # "host:pid" of the worker running it (this_worker()).
    worker = models.CharField(max_length=300, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Why a queued job has not started although a worker could take it (a quota is full:
    # "waiting: team Vision runs 4 of 4 allowed"); blank while it simply waits its turn.
    waiting = models.CharField(max_length=300, blank=True)

    class Meta:
        abstract = True

    # --- What the pages and events read -------------------------------------------------
    @property
    def group_name(self):
        return f"{self.group_prefix}-{self.pk}"

    @property
    def is_active(self):
        return self.status in ACTIVE

    @property
    def is_finished(self):
        return self.status in FINISHED

    @property
    def queue_name(self):
        return getattr(self, "queue", None) or self.default_queue

    def status_event(self, message=None):
        """The one shape of a status change, on the page, over the socket and in the API.
        `message` says what just happened; by default what happened last."""
        if message is None:
            message = self.latest_message()
        return {
            "type": "status",
            "status": self.status,
            "label": self.get_status_display(),
            "error": self.error,
            "message": message,
            "attempts": self.attempts,
            "waiting": self.waiting,
        }

    def latest_message(self):
        return ""

    # --- State changes --------------------------------------------------------------------
    def _objects(self):
        return type(self)._base_manager.filter(pk=self.pk)

    def enqueue(self):
        """Queue the current attempt once the row is committed (so the worker finds it).
        Redis down is no reason to lose the row: it stays queued and recovery queues it
        as soon as Redis answers."""
        self.job_id = f"{self.group_prefix}-{self.pk}-attempt-{self.attempts + 1}"
        self.queued = timezone.now()
        self._objects().update(job_id=self.job_id, queued=self.queued)
        queues.enqueue_on_commit(self.queue_name, self.job_function, self.pk, job_id=self.job_id)

    def submit(self, message="Queued"):
        """A new row's first attempt: record it and queue it."""
        self.changed(message)
        self.enqueue()

    def claim_filter(self):
        """Extra conditions for queued → running (an experiment must not be aborted)."""
        return {}

    def admission(self):
        """The claim's context: None when nothing holds the job back, or an object (an
        experiment's quotas.admission.Admission) whose `condition` narrows the claim's
        UPDATE and whose `refusal()` says why the job must wait."""
        return contextlib.nullcontext()

    def may_start(self):
        """Whether a job that waits (`waiting`) could start now: recovery queues it again then."""
        return True

    def claim(self, job_id=None):
        """Queued → running, for the RQ job `job_id` (None outside RQ). False when another
        run got there first, the row names a newer attempt, it was aborted, or its
        admission refused it (then it stays queued and says why in `waiting`)."""
        now = timezone.now()
        rows = self._objects().filter(status=JobStatus.QUEUED, **self.claim_filter())
        if job_id is not None:
            rows = rows.filter(job_id=job_id)
        with self.admission() as admission:
            refusal = admission.refusal() if admission else ""
            claimed = 0
            if not refusal:
                claimed = rows.filter(admission.condition if admission else models.Q()).update(
                    status=JobStatus.RUNNING,
                    started=Coalesce("started", models.Value(now)),
                    heartbeat=now,
                    worker=this_worker(),
                    error="",
                    waiting="",
                    attempts=models.F("attempts") + 1,
                )
                if not claimed and admission:
                    refusal = admission.refusal()
        self.refresh_from_db()
        if claimed:
            self.changed("Running on a worker" + (f" (attempt {self.attempts})" if self.attempts > 1 else ""))
        elif refusal:
            self.wait(refusal, job_id)
        return claimed == 1

    def wait(self, reason, job_id=None):
        """Stays queued, held back for `reason`: said once on its page, until it starts."""
        rows = self._objects().filter(status=JobStatus.QUEUED).exclude(waiting=reason)
        if job_id is not None:
            rows = rows.filter(job_id=job_id)
        if rows.update(waiting=reason):
            self.refresh_from_db()
            self.changed(reason[:1].upper() + reason[1:])

    def finish(self, status, error="", message=None):
        """Running (or queued) → done, failed or aborted. False when it had already ended."""
        finished = (
            self._objects()
            .filter(status__in=ACTIVE)
            .update(status=status, error=error, finished=timezone.now(), **self.finish_fields())
        )
        self.refresh_from_db()
        if finished:
            self.changed(error if message is None else message, level="error" if status == JobStatus.FAILED else "info")
        return finished == 1

    def finish_fields(self):
        """Columns to reset when the job ends."""
        return {}

    def requeue(self, message, level="info", statuses=(JobStatus.RUNNING,)):
        """Back to queued from one of `statuses`, as a new attempt."""
        if (
            not self._objects()
            .filter(status__in=statuses)
            .update(status=JobStatus.QUEUED, error="", finished=None, **self.requeue_fields())
        ):
            self.refresh_from_db()
            return False
        self.refresh_from_db()
        self.changed(message, level=level)
        self.enqueue()
        return True

    def requeue_fields(self):
        return {}

    def interrupted(self, reason):
        """The job died without finishing (its worker was killed, the machine rebooted):
        queue it again, to resume where it can, up to JOB_MAX_ATTEMPTS runs."""
        limit = settings.JOB_MAX_ATTEMPTS
        if self.attempts < limit and self.requeue(
            f"{reason}; {self.resume_note()} (attempt {self.attempts + 1} of {limit})", level="warning"
        ):
            return True
        return self.finish(JobStatus.FAILED, f"{reason}, {self.attempts} times; not retrying again.")

    def resume_note(self):
        """How the next attempt goes on, for the message a person reads."""
        return "starting again"

    def changed(self, message="", level="info"):
        """Record a status change and tell the page, and the consoles that list the row."""
        self.status_changed(message, level)
        broadcast(self.group_name, self.status_event(message))
        self.announce()

    # Whether the console lists rows of this kind (jobs.console): a subclass that is Owned says so.
    listed_on_console = False

    def announce(self):
        """Tell the consoles that list this row that it changed. Once committed: a console
        reads the row afresh for each of its viewers, and must find it."""
        if self.listed_on_console:
            transaction.on_commit(lambda: console.announce(self))

    def status_changed(self, message, level):
        if message:
            self.log(message, level, send=False)

    @property
    def log_text(self):
        return "\n".join(line.message for line in self.log_lines.all())

    def log(self, message, level="info", send=True):
        line = self.log_lines.create(level=level, message=message)
        if send:
            broadcast(self.group_name, line.as_event())
        return line


class JobLogLine(models.Model):
    """A line of a job's log. A subclass adds the foreign key, named by the job's kind,
    with related_name="log_lines"."""

    class Level(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"

    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    message = models.TextField()
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True

    def __str__(self):
        return self.message[:80]

    def as_event(self):
        return {
            "type": "log",
            "id": self.pk,
            "level": self.level,
            "message": self.message,
            "time": self.created.isoformat(),
        }


def remove_files_on_delete(model):
    """A job's folder (`model.directory`) goes with its row, also when a cascade deletes it,
    once the deletion is committed."""

    def remove(sender, instance, **kwargs):
        directory = instance.directory
        transaction.on_commit(lambda: shutil.rmtree(directory, ignore_errors=True))

    post_delete.connect(remove, sender=model, weak=False, dispatch_uid=f"remove-files-{model._meta.label_lower}")
    return model


def job_models():
    """Every concrete kind of job, for recovery."""
    from django.apps import apps

    return [model for model in apps.get_models() if issubclass(model, Job)]
