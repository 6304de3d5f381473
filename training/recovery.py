"""Keeping the database's word: it is the truth, Redis only a cache of work.

- An experiment whose worker died without a word (kill -9 of the whole worker, a lost
  machine) has a stale heartbeat: it resumes from its last snapshot.
- A queued experiment whose job Redis lost (a restart: Redis keeps nothing on disk here)
  is queued again.

Training workers run this when they start and every minute while idle, so a crashed
experiment resumes as soon as a worker is free again."""

import logging
from datetime import timedelta

import django_rq
from django.conf import settings
from django.utils import timezone
from rq.job import Job

from jobs.events import broadcast
from training.models import Experiment

log = logging.getLogger(__name__)


def recover():
    return {"resumed": recover_stalled(), "requeued": requeue_lost()}


def requeue_lost():
    """Queued experiments whose job is gone from Redis, queued again."""
    connection = django_rq.get_connection("training")
    requeued = []
    for experiment in Experiment.objects.filter(status=Experiment.Status.QUEUED).exclude(rq_job_id=""):
        if Job.exists(experiment.rq_job_id, connection=connection):
            continue
        log.warning("experiment %s: its queued job %s was lost; queueing it again", experiment.pk, experiment.rq_job_id)
        experiment.log_event("Its queued job was lost (Redis restarted?); queued again.", level="warning")
        experiment.enqueue_training()
        requeued.append(experiment.pk)
    return requeued


def recover_stalled():
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.TRAINING_STALE_SECONDS)
    recovered = []
    for experiment in Experiment.objects.filter(status=Experiment.Status.RUNNING, heartbeat__lt=stale_before):
        # Claim the recovery: of two workers looking at once, one wins.
        if not Experiment.objects.filter(pk=experiment.pk, heartbeat=experiment.heartbeat).update(heartbeat=now):
            continue
        log.warning("experiment %s: no heartbeat since %s; its worker died", experiment.pk, experiment.heartbeat)
        experiment.interrupted("Its worker stopped responding", settings.TRAINING_MAX_ATTEMPTS)
        broadcast(experiment.group_name, {"type": "status", "status": experiment.status, "error": experiment.error})
        recovered.append(experiment.pk)
    return recovered
