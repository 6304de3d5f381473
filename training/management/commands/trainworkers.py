"""`python manage.py trainworkers`: every training worker of this machine from one command.

One RQ worker process per GPU (or per group of --gpus-per-worker GPUs), each started with
CUDA_VISIBLE_DEVICES set to its GPUs and listening on its own device queue first, then on
the shared "training" queue; on a machine without a GPU, one CPU worker. This process only
supervises: it lists the GPUs through NVML, never imports JAX (the workers fork their jobs,
and a fork after JAX has started deadlocks), restarts a worker that dies, and stops them
all on Ctrl-C or SIGTERM.

Stopping follows RQ's own two steps. The first signal stops idle workers at once and lets
busy ones finish their current job; a second signal makes them abort it; a third kills
whatever is left. The workers stay in this process's process group, so a signal to the
whole group (Ctrl-C in a terminal, honcho's stop) reaches them directly as well; RQ ignores
the duplicate that arrives within a second.
"""

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import psutil
import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from training import devices
from training.workers import HOST_PATTERN, SHARED_QUEUE, WorkerSpec, forget_dead_workers, plan_workers

log = logging.getLogger("training.trainworkers")

POLL_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 60
# A worker that ran this long before dying is not crash-looping: its next restart is quick again.
HEALTHY_SECONDS = 60
# RQ treats a second signal within a second of the first as a duplicate; wait this long to mean it.
RQ_DUPLICATE_SIGNAL_SECONDS = 1.2


class Command(BaseCommand):
    help = (
        "Start one training worker per GPU (CUDA_VISIBLE_DEVICES set for each), or one CPU worker "
        "on a machine without a GPU, and supervise them: restart the ones that die, stop all on Ctrl-C."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--gpus-per-worker",
            type=int,
            default=1,
            metavar="N",
            help="GPUs each worker owns; one experiment trains data-parallel across them (default 1).",
        )
        parser.add_argument(
            "--cpu-workers",
            type=int,
            default=None,
            metavar="N",
            help="CPU training workers to start besides the GPU ones (default: 1 without a GPU, else 0).",
        )
        parser.add_argument(
            "--host",
            default=None,
            help="The name this machine's device queues carry (default: PLATFORM_WORKER_HOST or the host name). "
            "Give each machine its own, stable name.",
        )
        parser.add_argument("--burst", action="store_true", help="Work through what is queued, then exit.")
        parser.add_argument(
            "--fake-gpus",
            type=int,
            default=0,
            metavar="N",
            help="For tests and demos only: pretend this machine has N GPUs. Workers get device queues and "
            "CUDA_VISIBLE_DEVICES as for real ones but run JAX on the CPU.",
        )

    def handle(self, *args, **options):
        host = options["host"] or devices.host_name()
        if not HOST_PATTERN.match(host):
            raise CommandError(f"--host {host!r}: use letters, digits, '.', '_' and '-'")
        if options["fake_gpus"]:
            gpus = [devices.Gpu(i, "Fake GPU", 0, f"GPU-fake-{i}") for i in range(options["fake_gpus"])]
        else:
            # CUDA_VISIBLE_DEVICES, as for any CUDA program, limits the GPUs handed out:
            # `CUDA_VISIBLE_DEVICES=2,3 manage.py trainworkers` leaves 0 and 1 alone.
            visible = set(devices.visible_gpu_indices())
            gpus = [gpu for gpu in devices.list_gpus() if gpu.index in visible]
        if options["gpus_per_worker"] < 1 or (options["cpu_workers"] or 0) < 0:
            raise CommandError("--gpus-per-worker must be at least 1 and --cpu-workers at least 0")
        specs = plan_workers(
            host, gpus, options["gpus_per_worker"], options["cpu_workers"], run_on_cpu=bool(options["fake_gpus"])
        )
        if not specs:
            raise CommandError("Nothing to start: no GPU was selected and --cpu-workers is 0")
        if len(gpus) % options["gpus_per_worker"]:
            log.warning("%d GPUs in groups of %d: the last worker gets fewer", len(gpus), options["gpus_per_worker"])
        if not gpus:
            log.info("No GPU on %s (no NVIDIA driver, or none selected): training runs on the CPU", host)
        code = Supervisor(host, specs, burst=options["burst"], verbosity=options["verbosity"]).run()
        if code:
            raise SystemExit(code)


@dataclass
class Child:
    spec: WorkerSpec
    process: subprocess.Popen | None = None
    started: float = 0.0
    failures: int = 0  # deaths in a row, each soon after its start
    restart_at: float | None = 0.0  # None: not to be started again
    returncode: int | None = None


class Supervisor:
    def __init__(self, host, specs, burst=False, verbosity=1):
        self.host = host
        self.children = [Child(spec) for spec in specs]
        self.burst = burst
        self.verbosity = verbosity
        self.signals = 0  # received, counted by the handler and acted on by the loop
        self.acted_on = 0
        self.first_stop_at = None

    # --- The loop --------------------------------------------------------------------------
    def run(self):
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._forget_dead_workers()
            while True:
                self._handle_signals()
                for child in self.children:
                    self._tend(child)
                if all(child.process is None and child.restart_at is None for child in self.children):
                    break
                time.sleep(POLL_SECONDS)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        failed = [child for child in self.children if child.returncode]
        return 1 if self.burst and failed else 0

    def _tend(self, child):
        now = time.monotonic()
        if child.process is None:
            if child.restart_at is not None and now >= child.restart_at and not self.stopping:
                self._start(child)
            elif self.stopping:
                child.restart_at = None
            return
        returncode = child.process.poll()
        if returncode is None:
            return
        child.process, child.returncode = None, returncode
        if self.stopping or self.burst:
            child.restart_at = None
            if returncode:
                log.warning("%s: worker exited with code %s", child.spec.queue, returncode)
            return
        # Not asked to stop: it crashed, was killed, or lost Redis. Bring it back, slower each
        # time it dies young, and first unregister it so the console does not show it twice.
        child.failures = 0 if now - child.started >= HEALTHY_SECONDS else child.failures
        delay = min(2**child.failures, MAX_BACKOFF_SECONDS)
        child.failures += 1
        child.restart_at = now + delay
        log.warning("%s: worker exited with code %s; restarting in %d s", child.spec.queue, returncode, delay)
        self._forget_dead_workers()

    def _start(self, child):
        command = [
            sys.executable,
            str(settings.BASE_DIR / "manage.py"),
            "rqworker",
            "--worker-class",
            "training.workers.TrainingWorker",
            "--verbosity",
            str(self.verbosity),
            # The device queue comes first, from the environment (see TrainingWorker).
            SHARED_QUEUE,
            *(["--burst"] if self.burst else []),
        ]
        env = {**os.environ, **child.spec.env}
        child.process = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent)
        child.started = time.monotonic()
        log.info(
            "%s: worker pid %s for %s, CUDA_VISIBLE_DEVICES=%r; it takes this queue's jobs, then %r's",
            child.spec.queue,
            child.process.pid,
            child.spec.label,
            child.spec.env["CUDA_VISIBLE_DEVICES"],
            SHARED_QUEUE,
        )

    def _forget_dead_workers(self):
        try:
            for name in forget_dead_workers(self.host):
                log.info("unregistered worker %s: its process is gone", name)
        except redis.exceptions.RedisError as exc:
            # Best effort: RQ forgets them by itself when their registration expires.
            log.warning("could not reach Redis to unregister dead workers: %s", exc)

    # --- Stopping ----------------------------------------------------------------------------
    @property
    def stopping(self):
        return self.signals > 0

    def _on_signal(self, signum, frame):
        # Only count here: the loop acts within POLL_SECONDS, outside the signal handler.
        self.signals += 1

    def _handle_signals(self):
        if self.acted_on >= self.signals:
            return
        now = time.monotonic()
        if self.acted_on == 0:
            self.first_stop_at = now
            self.acted_on = 1
            log.info(
                "stopping %d worker(s): idle ones now, busy ones after their current job; "
                "send the signal again to abort running jobs",
                len(self._running()),
            )
            self._signal_all(signal.SIGTERM)
        elif self.acted_on == 1:
            if now - self.first_stop_at < RQ_DUPLICATE_SIGNAL_SECONDS:
                return  # too soon: RQ would drop it as a duplicate; the next pass sends it
            self.acted_on = 2
            log.warning("aborting running jobs")
            self._signal_all(signal.SIGTERM)
        else:
            self.acted_on = self.signals
            log.warning("killing the workers and their jobs")
            for child in self._running():
                _kill_tree(child.process.pid)

    def _running(self):
        return [child for child in self.children if child.process is not None and child.process.poll() is None]

    def _signal_all(self, sig):
        for child in self._running():
            try:
                child.process.send_signal(sig)
            except ProcessLookupError:
                pass


def _kill_tree(pid):
    """The worker and everything under it: RQ puts its work-horse in a process group of its
    own, out of reach of a signal to ours."""
    try:
        parent = psutil.Process(pid)
        tree = [*parent.children(recursive=True), parent]
    except psutil.Error:
        return
    for process in tree:
        try:
            process.kill()
        except psutil.Error:
            pass


def _load_prctl():
    # Looked up here, in the supervisor, so the forked child only makes the call.
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()
PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """In the worker, between fork and exec: have the kernel send it SIGTERM when this
    supervisor dies, even by SIGKILL, so no worker outlives it and keeps a GPU. Linux only."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
