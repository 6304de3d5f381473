"""Training workers and the devices they own, as the web and the supervisor see them.

Queues: the shared queue "training" means "next available device". Each training worker
also owns a device queue, `training@<host>/gpu<i>` (`gpu0+1` for a worker owning several
GPUs, `cpu` for a worker without one), and listens on it before the shared queue, so a job
sent to a chosen device waits for exactly that device and a job sent to "training" goes
to whichever worker is free first. The name is stable across restarts of the worker, so
a job that waits for a device is picked up when its worker comes back.

Workers advertise their device in RQ's own worker hash (`rq:worker:<name>`, see
TrainingWorker.serialize): it lives and expires with the worker's registration, so the
web's list of devices is RQ's list of live workers, not a registry of our own.

This module must not import JAX, nor anything that does: the supervisor and every RQ
worker parent import it, and a worker parent that initialised JAX would deadlock when
RQ forks the job.
"""

import os
import re
import socket
from dataclasses import dataclass, field

import psutil
import redis
import rq
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.worker import WorkerStatus

from jobs import queues
from jobs.worker import Worker

SHARED_QUEUE = "training"
SHARED_LABEL = "Next available"
QUEUE_PREFIX = f"{SHARED_QUEUE}@"
# Host names go into queue and worker names, which the pages and `ps` show: keep them plain.
HOST_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_QUEUE_PATTERN = re.compile(
    rf"^{re.escape(QUEUE_PREFIX)}(?P<host>[^/]+)/(?:gpu(?P<gpus>\d+(?:\+\d+)*)|cpu(?P<slot>\d*))$"
)

# Set by `manage.py trainworkers` for each worker it starts; read by TrainingWorker.
ENV_QUEUE = "PLATFORM_DEVICE_QUEUE"
ENV_LABEL = "PLATFORM_DEVICE_LABEL"


def device_queue_name(host, gpu_indices, cpu_slot=0):
    """`training@host/gpu0`, `training@host/gpu0+1`; without GPUs `training@host/cpu`
    (`cpu1`, `cpu2`… for further CPU workers on the same host)."""
    if not HOST_PATTERN.match(host):
        raise ValueError(f"{host!r} cannot name a worker host: use letters, digits, '.', '_' and '-'")
    if gpu_indices:
        return f"{QUEUE_PREFIX}{host}/gpu{'+'.join(str(i) for i in sorted(gpu_indices))}"
    return f"{QUEUE_PREFIX}{host}/cpu{cpu_slot or ''}"


def parse_device_queue(name):
    """(host, gpu indices, cpu slot) of a device queue name; None for any other name."""
    match = _QUEUE_PATTERN.match(name)
    if not match:
        return None
    gpus = [int(i) for i in match["gpus"].split("+")] if match["gpus"] else []
    return match["host"], gpus, int(match["slot"] or 0)


def is_device_queue(name):
    return parse_device_queue(name) is not None


def device_label(host, gpus, cpu_slot=0):
    """What a person reads in the form and on the console, e.g. "GPU 0 · NVIDIA H100 on host-a".

    gpus: devices.Gpu objects, or bare indices when the names are not known.
    """
    if not gpus:
        return f"CPU on {host}" if not cpu_slot else f"CPU worker {cpu_slot + 1} on {host}"
    indices = "+".join(str(getattr(gpu, "index", gpu)) for gpu in gpus)
    names = sorted({gpu.name for gpu in gpus if getattr(gpu, "name", None)})
    what = "GPU" if len(gpus) == 1 else "GPUs"
    if not names:
        return f"{what} {indices} on {host}"
    model = names[0] if len(names) == 1 else ", ".join(names)
    count = f"{len(gpus)} × " if len(gpus) > 1 and len(names) == 1 else ""
    return f"{what} {indices} · {count}{model} on {host}"


def queue_for(name):
    """The queue to enqueue a training job on: "training" or a device queue (made up per
    host at run time, on the "training" queue's connection)."""
    if name != SHARED_QUEUE and not is_device_queue(name):
        raise ValueError(f"{name!r} is neither {SHARED_QUEUE!r} nor a device queue")
    return queues.get_queue(name)


# --- What `manage.py trainworkers` starts ------------------------------------------------------
@dataclass(frozen=True)
class WorkerSpec:
    """One worker process to start: its device queue, label and environment."""

    queue: str
    label: str
    gpu_indices: tuple = ()
    env: dict = field(default_factory=dict)

    @property
    def kind(self):
        return "gpu" if self.gpu_indices else "cpu"


def plan_workers(host, gpus, gpus_per_worker=1, cpu_workers=None, run_on_cpu=False):
    """The workers for this machine: one per group of `gpus_per_worker` GPUs, then
    `cpu_workers` CPU workers (default: one when there is no GPU, none otherwise).

    run_on_cpu: the GPUs are stand-ins (--fake-gpus): the workers get their
    CUDA_VISIBLE_DEVICES and device queues as real ones would, but JAX runs on the CPU.
    """
    if gpus_per_worker < 1:
        raise ValueError("gpus_per_worker must be at least 1")
    if cpu_workers is None:
        cpu_workers = 0 if gpus else 1
    specs = []
    for start in range(0, len(gpus), gpus_per_worker):
        group = gpus[start : start + gpus_per_worker]
        indices = tuple(gpu.index for gpu in group)
        env = {
            "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in indices),
            # CUDA numbers GPUs fastest first unless told otherwise; NVML, which listed
            # them, numbers them by PCI bus. The index must mean the same GPU to both.
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        }
        if run_on_cpu:
            env["JAX_PLATFORMS"] = "cpu"
        specs.append(_spec(host, device_queue_name(host, indices), device_label(host, group), indices, env))
    for slot in range(cpu_workers):
        # An empty CUDA_VISIBLE_DEVICES hides every GPU from CUDA, and JAX_PLATFORMS keeps
        # JAX from even looking for one: a CPU worker never holds GPU memory.
        env = {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}
        specs.append(_spec(host, device_queue_name(host, (), slot), device_label(host, (), slot), (), env))
    return specs


def _spec(host, queue, label, gpu_indices, env):
    env = {**env, ENV_QUEUE: queue, ENV_LABEL: label, "PLATFORM_WORKER_HOST": host}
    return WorkerSpec(queue, label, gpu_indices, env)


# --- The worker class ---------------------------------------------------------------------------
class TrainingWorker(Worker):
    """An RQ worker that owns a device: it listens on its device queue before the queues
    it was given, and writes its device into its RQ worker hash for the web to read.

    Started as `manage.py rqworker --worker-class training.workers.TrainingWorker training`
    with PLATFORM_DEVICE_QUEUE and PLATFORM_DEVICE_LABEL set (trainworkers does all that).
    The device queue comes from the environment, not the command line, because django-rq's
    rqworker accepts only queues named in settings.RQ_QUEUES. Without those variables it is
    a plain worker.
    """

    # Fields added to RQ's worker hash; prefixed so a future RQ field cannot clash.
    FIELDS = ("platform_device_queue", "platform_device_label")

    def __init__(self, queues, name=None, *args, **kwargs):
        self.device_queue = self.device_label = None
        # Worker.all() builds instances to read workers (prepare_for_work=False): those
        # describe another process, whose device is read from Redis in refresh().
        if kwargs.get("prepare_for_work", True) and os.environ.get(ENV_QUEUE):
            self.device_queue = os.environ[ENV_QUEUE]
            self.device_label = os.environ.get(ENV_LABEL) or self.device_queue
            queues = [self.device_queue, *(queues if isinstance(queues, list | tuple) else [queues])]
            # Readable in /admin/rq/ and Redis, unique per process as RQ requires.
            name = name or f"{self.device_queue}.{os.getpid()}"
        super().__init__(queues, name, *args, **kwargs)

    def serialize(self):
        data = super().serialize()
        if self.device_queue:
            data.update(zip(self.FIELDS, (self.device_queue, self.device_label), strict=True))
        return data

    def refresh(self):
        super().refresh()
        values = self.connection.hmget(self.key, self.FIELDS)
        self.device_queue, self.device_label = (v.decode() if isinstance(v, bytes) else v for v in values)


def _connection():
    return queues.get_connection(SHARED_QUEUE)


def live_workers(connection=None):
    """Registered training workers that own a device, from RQ's worker registry."""
    connection = connection or _connection()
    return [w for w in TrainingWorker.all(connection=connection) if w.device_queue]


def worker_device_choices():
    """Choices for the experiment form: "Next available", then each live device queue."""
    labels = {worker.device_queue: worker.device_label for worker in live_workers()}
    return [(SHARED_QUEUE, SHARED_LABEL), *sorted(labels.items(), key=lambda item: _queue_order(item[0]))]


def _queue_order(name):
    host, gpus, slot = parse_device_queue(name) or (name, [], 0)
    return (host, 0 if gpus else 1, gpus, slot)


def _experiment_ids(jobs):
    # A training job's first argument is its experiment id (see Experiment.enqueue_training).
    return [job.args[0] for job in jobs if job is not None and job.args]


def _waiting_ids(name, connection):
    queue = rq.Queue(name, connection=connection)
    return _experiment_ids(Job.fetch_many(queue.get_job_ids(), connection=connection))


def _current_id(worker):
    try:
        job = worker.get_current_job()
    except (NoSuchJobError, redis.exceptions.ResponseError):
        return None  # finished and deleted between listing and reading
    ids = _experiment_ids([job])
    return ids[0] if ids else None


def device_board():
    """What runs and waits on each device, for the console. Returns experiment ids, not
    names: the caller shows only those the user may see.

    The first row is the shared queue (kind "shared", state None, current None). Then one
    row per device queue, sorted by host and device, with kind "gpu" or "cpu", the label,
    state "idle", "busy" or "offline" (jobs wait for a device whose worker is not
    running), the worker's name, `current` (the running experiment's id or None) and
    `waiting` (ids in queue order).
    """
    connection = _connection()
    rows = {}
    for worker in live_workers(connection):
        row = rows.setdefault(worker.device_queue, _row(worker.device_queue, worker.device_label, "idle"))
        if worker.get_state() == WorkerStatus.BUSY:
            row.update(state="busy", worker=worker.name, current=_current_id(worker))
        elif row["worker"] is None:
            row["worker"] = worker.name
    # A device queue that still holds jobs after its worker went away: show them waiting.
    for queue in rq.Queue.all(connection=connection):
        if queue.name not in rows and is_device_queue(queue.name) and queue.count:
            host, gpus, slot = parse_device_queue(queue.name)
            rows[queue.name] = _row(queue.name, device_label(host, gpus, slot), "offline")
    for name, row in rows.items():
        row["waiting"] = _waiting_ids(name, connection)
    shared = _row(SHARED_QUEUE, SHARED_LABEL, None, kind="shared")
    shared["waiting"] = _waiting_ids(SHARED_QUEUE, connection)
    return [shared, *(rows[name] for name in sorted(rows, key=_queue_order))]


def _row(queue, label, state, kind=None):
    parsed = parse_device_queue(queue)
    return {
        "queue": queue,
        "label": label,
        "kind": kind or ("gpu" if parsed and parsed[1] else "cpu"),
        "host": parsed[0] if parsed else None,
        "gpu_indices": parsed[1] if parsed else [],
        "state": state,
        "worker": None,
        "current": None,
        "waiting": [],
    }


def forget_dead_workers(host, connection=None):
    """Unregister this host's training workers whose process is gone (killed, crashed).

    RQ forgets such a worker only when its registration expires, minutes later; until
    then the console would show a dead worker beside its restarted successor. Only this
    host can tell whether a pid is alive, so the supervisor calls this for its own host;
    RQ's own record of the machine must match too, so two machines that were given the
    same PLATFORM_WORKER_HOST by mistake do not unregister each other's workers.
    Returns the names forgotten.
    """
    forgotten = []
    this_machine = socket.gethostname()
    for worker in live_workers(connection):
        queue = parse_device_queue(worker.device_queue)
        if (
            queue
            and queue[0] == host
            and worker.hostname == this_machine
            and worker.pid
            and not psutil.pid_exists(worker.pid)
        ):
            worker.register_death()
            forgotten.append(worker.name)
    return forgotten
