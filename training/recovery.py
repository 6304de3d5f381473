"""Finding experiments whose worker died without a word (kill -9 of the whole worker, a
lost machine): their heartbeat goes stale. Training workers run this before taking work,
so a crashed experiment resumes as soon as a worker is free again."""

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from config.events import broadcast
from training.models import Experiment

log = logging.getLogger(__name__)


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
