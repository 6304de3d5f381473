"""Keeping the database's word: it is the truth, Redis only a cache of work.

For every kind of job (jobs.models.job_models):

- a running job whose worker died is queued again, to resume from where it can. A worker
  on the same host knows at once (the worker's process is gone: a work-horse dies with its
  worker); from another host a stale heartbeat tells, after JOB_STALE_SECONDS;
- a queued job whose RQ job is gone (Redis restarted and kept nothing, or the row was
  committed while Redis was down) is queued again.

Every worker runs `recover()` when it starts and every few seconds while idle (jobs.worker);
a work-horse killed under a living worker is handled by that worker at once (`horse_died`).
"""

import logging
import socket
from datetime import timedelta

import django_rq
import psutil
from django.conf import settings
from django.utils import timezone
from redis.exceptions import RedisError
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus

from jobs.models import JobStatus, job_models

log = logging.getLogger(__name__)

# A row queued this recently may still be on its way to Redis (its transaction commits).
QUEUED_GRACE_SECONDS = 5
STOPPED = "The worker stopped"


def recover():
    """What was recovered, per model label: {"training.experiment": {"resumed": [...], "requeued": [...]}}."""
    report = {}
    for model in job_models():
        resumed, requeued = recover_stalled(model), requeue_lost(model)
        if resumed or requeued:
            report[model._meta.label_lower] = {"resumed": resumed, "requeued": requeued}
    return report


def worker_is_gone(worker):
    """Whether the "host:pid" worker is known dead: only this host can tell."""
    host, _, pid = worker.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not psutil.pid_exists(int(pid))


def recover_stalled(model):
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.JOB_STALE_SECONDS)
    recovered = []
    for job in model._base_manager.filter(status=JobStatus.RUNNING):
        gone = worker_is_gone(job.worker)
        if not gone and (job.heartbeat is None or job.heartbeat >= stale_before):
            continue
        # Claim the recovery: of two workers looking at once, one wins.
        if not model._base_manager.filter(pk=job.pk, heartbeat=job.heartbeat, status=JobStatus.RUNNING).update(
            heartbeat=now
        ):
            continue
        why = "its worker process is gone" if gone else f"no heartbeat since {job.heartbeat:%H:%M:%S}"
        log.warning("%s %s: %s", model._meta.verbose_name, job.pk, why)
        job.interrupted(STOPPED)
        recovered.append(job.pk)
    return recovered


def requeue_lost(model):
    """Queued rows whose RQ job is gone from Redis (or ended without running them)."""
    before = timezone.now() - timedelta(seconds=QUEUED_GRACE_SECONDS)
    requeued = []
    for job in model._base_manager.filter(status=JobStatus.QUEUED, queued__lt=before):
        if rq_job_alive(job):
            continue
        if job.waiting:
            # Held back (a quota is full): queued again only once it may start, so that no
            # worker spins on it.
            if job.may_start():
                job.enqueue()
                requeued.append(job.pk)
            continue
        log.warning(
            "%s %s: its queued job %s was lost; queueing it again", model._meta.verbose_name, job.pk, job.job_id
        )
        job.log("Its place in the queue was lost (Redis restarted?); queued again.", level="warning")
        job.enqueue()
        requeued.append(job.pk)
    return requeued


def rq_job_alive(job):
    """Whether the row's RQ job still waits or runs. True when Redis cannot tell."""
    try:
        connection = django_rq.get_connection(job.default_queue)
        status = RQJob.fetch(job.job_id, connection=connection).get_status()
    except RedisError:
        return True
    except Exception:  # NoSuchJobError, or a job hash Redis half lost
        return False
    return status not in (RQStatus.FAILED, RQStatus.STOPPED, RQStatus.CANCELED, RQStatus.FINISHED)


def row_of(rq_job):
    """The row an RQ job works for, while the row still names it."""
    for model in job_models():
        if model.job_function == rq_job.func_name and rq_job.args:
            return model._base_manager.filter(pk=rq_job.args[0], job_id=rq_job.id).first()
    return None


def horse_died(rq_job):
    """The work-horse was killed (kill -9, the OOM killer) under a living worker."""
    job = row_of(rq_job)
    if job is not None and job.status == JobStatus.RUNNING:
        log.warning("%s %s: its work-horse was killed", job._meta.verbose_name, job.pk)
        job.interrupted(STOPPED)


def on_failure(rq_job, connection, exc_type, exc_value, traceback):
    """RQ calls this when a job raised past its own handling, or timed out: the row must
    not stay running."""
    job = row_of(rq_job)
    if job is not None and job.is_active:
        job.finish(JobStatus.FAILED, f"The job stopped with an internal error: {exc_value or exc_type.__name__}")
