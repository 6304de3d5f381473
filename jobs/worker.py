"""The RQ worker every queue of the platform runs (settings.RQ["WORKER_CLASS"]).

What it adds to RQ's:

- its work-horse dies with it (PR_SET_PDEATHSIG): a killed worker never leaves a job
  training on its device while its restarted successor takes the next one;
- a work-horse killed under it is noticed at once and its job queued again to resume;
- it looks for dead and lost jobs of every kind (jobs.recovery) when it starts and every
  RECOVERY_SECONDS while idle, whatever worker TTL it was given: RQ would wait for an
  idle dequeue to time out (worker TTL - 15 s, 405 s with django-rq's default);
- after Redis restarted empty it registers itself again, so its device stays listed.

This module must not import JAX, nor anything that does: a worker parent that initialised
JAX would deadlock when RQ forks the job.
"""

import ctypes
import logging
import os
import signal
import sys
import time

import rq
from redis.exceptions import RedisError
from rq.exceptions import StopRequested

log = logging.getLogger(__name__)

RECOVERY_SECONDS = 5
PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid):
    """Ask the kernel to kill this process when its parent dies (Linux). The parent may
    already be gone by the time it is asked: then exit now."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %s", ctypes.get_errno())
    if os.getppid() != parent_pid:
        os._exit(1)


class Worker(rq.Worker):
    # RQ doubles its wait for a lost Redis up to a minute; a platform waits at most this.
    max_connection_wait_time = 5.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._last_recovery = 0.0

    @property
    def dequeue_timeout(self):
        # Wake up often enough to look for dead jobs, whatever the worker TTL.
        return RECOVERY_SECONDS

    def main_work_horse(self, job, queue):
        die_with_parent(self._parent_pid)
        super().main_work_horse(job, queue)

    def fork_work_horse(self, job, queue):
        self._parent_pid = os.getpid()
        super().fork_work_horse(job, queue)

    def handle_work_horse_killed(self, job, retpid, ret_val, rusage):
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        from jobs import recovery

        try:
            recovery.horse_died(job)
        except StopRequested:
            raise
        except Exception:
            log.exception("could not recover job %s after its work-horse died", job.id)

    def run_maintenance_tasks(self):
        super().run_maintenance_tasks()
        self.recover()

    def recover(self):
        self._last_recovery = time.monotonic()
        from django.db import close_old_connections

        from jobs import recovery

        try:
            close_old_connections()
            recovery.recover()
        except StopRequested:
            raise  # RQ's signal handler stops an idle worker by raising it, wherever it is
        except Exception:
            log.exception("recovery failed; trying again in %s s", RECOVERY_SECONDS)

    def register_birth(self, *args, **kwargs):
        super().register_birth(*args, **kwargs)
        self._born = True

    def heartbeat(self, timeout=None, pipeline=None):
        if getattr(self, "_born", False) and not self._is_horse and pipeline is None:
            self._register_again_if_forgotten()
        super().heartbeat(timeout, pipeline)
        if self._is_horse or pipeline is not None:
            return
        # RQ beats on every pass of its dequeue loop, i.e. at least every dequeue_timeout.
        if time.monotonic() - self._last_recovery >= RECOVERY_SECONDS:
            self.recover()

    def _register_again_if_forgotten(self):
        """After Redis restarted empty, RQ's heartbeat would only stamp a key that is gone
        (leaving a hash with nothing but the stamp): the worker, and the device it
        advertises, would vanish from every list."""
        try:
            if self.connection.hexists(self.key, "birth"):
                return
            log.warning("worker %s: Redis forgot this worker; registering again", self.name)
            self.connection.delete(self.key)
            self.register_birth()
        except RedisError:
            pass  # RQ's own loop waits for Redis to come back
