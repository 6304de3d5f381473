import django_rq
from django.conf import settings
from django.db import transaction
from rq import Callback


def enqueue_on_commit(queue, func_path, object_id, *, on_failure, job_id=None):
    """Queue a job that takes one row id, once that row is committed (so the worker finds
    it). Functions go by dotted path: the web process never imports job code (and JAX)."""

    def enqueue():
        if queue in settings.RQ_QUEUES:
            target = django_rq.get_queue(queue)
        else:  # a training device queue, named per host at run time
            from training.workers import queue_for

            target = queue_for(queue)
        target.enqueue(func_path, object_id, job_id=job_id, on_failure=Callback(on_failure))

    transaction.on_commit(enqueue)
