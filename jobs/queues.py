"""Queueing a job: by the row's id, once the row is committed, and never at the cost of
the row when Redis is down (the database is the truth; recovery queues it later)."""

import logging
import threading

import django_rq
import rq
from django.conf import settings
from django.db import transaction
from django_rq.connection_utils import filter_connection_params
from redis.exceptions import RedisError
from rq import Callback

log = logging.getLogger(__name__)

# RQ calls this when a job raised past its own handling or timed out.
ON_FAILURE = "jobs.recovery.on_failure"

# django_rq.get_connection() builds a new client, with a new connection pool, on every
# call: each page that showed the queues opened (and left to the garbage collector) a TCP
# connection to Redis. One client per distinct connection setting is kept for the process
# instead; redis-py's pool is thread-safe, and after a fork it notices the new pid and
# opens fresh connections rather than sharing the parent's sockets.
_clients = {}
_clients_lock = threading.Lock()


def get_connection(name):
    """The shared Redis client of queue `name` of settings.RQ_QUEUES."""
    config = settings.RQ_QUEUES[name]
    key = repr(sorted(filter_connection_params(config).items()))
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = django_rq.get_connection(name)
    return client


def get_queue(name):
    """A queue of settings.RQ_QUEUES, or one made up at run time under one of them:
    `training@host/gpu0` lives on the "training" queue's connection and timeout."""
    if name in settings.RQ_QUEUES:
        return django_rq.get_queue(name, connection=get_connection(name))
    base = name.split("@", 1)[0]
    if "@" not in name or base not in settings.RQ_QUEUES:
        raise ValueError(f"{name!r} is not a queue of this installation")
    # A DjangoRQ queue would look its own name up in RQ_QUEUES for the result TTL, and fail.
    return rq.Queue(
        name,
        connection=get_connection(base),
        default_timeout=settings.RQ_QUEUES[base].get("DEFAULT_TIMEOUT"),
    )


def enqueue(queue, func_path, object_id, *, job_id):
    """Queue now. False (and the row stays queued for recovery) when Redis does not answer.
    Functions go by dotted path: the web process never imports job code (and JAX)."""
    try:
        get_queue(queue).enqueue(func_path, object_id, job_id=job_id, on_failure=Callback(ON_FAILURE))
    except RedisError as exc:
        log.warning("could not queue %s (%s): %s; it is queued when Redis answers again", job_id, queue, exc)
        return False
    return True


def enqueue_on_commit(queue, func_path, object_id, *, job_id):
    transaction.on_commit(lambda: enqueue(queue, func_path, object_id, job_id=job_id))


def redis_answers(queue="default"):
    """Whether the queues' Redis answers now (pages say so when it does not)."""
    name = queue if queue in settings.RQ_QUEUES else next(iter(settings.RQ_QUEUES))
    try:
        return bool(get_connection(name).ping())
    except RedisError:
        return False
