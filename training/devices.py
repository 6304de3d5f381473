"""What hardware this process can see and how busy it is: GPUs through NVML, CPU and
memory through psutil.

No Django and no JAX here. The worker supervisor lists GPUs before it starts any worker,
and the training job samples its own process from a heartbeat thread; neither may
initialise a JAX backend (JAX would claim every GPU, and forking after JAX has started
its threads deadlocks). NVML only reads the driver's counters and claims nothing.

Every function degrades instead of raising: a machine without the NVIDIA driver (or
without the `nvidia-ml-py` package) simply has no GPU, and a GPU that stops answering
reports None for what it could not read.
"""

import os
import socket
import threading
import time
from dataclasses import dataclass

import psutil

try:
    import pynvml
except ImportError:  # the package is pinned in requirements.txt; its absence means "no GPU"
    pynvml = None


@dataclass(frozen=True)
class Gpu:
    index: int  # NVML's index: the one CUDA_VISIBLE_DEVICES means under CUDA_DEVICE_ORDER=PCI_BUS_ID
    name: str
    memory_total_bytes: int
    uuid: str


def host_name():
    """The name this machine goes by in queue names and on the pages.

    PLATFORM_WORKER_HOST overrides the system's: a container gets a new random host name
    each time it starts, and a device queue named after it would strand its waiting jobs.
    """
    return os.environ.get("PLATFORM_WORKER_HOST") or socket.gethostname()


# --- NVML ---------------------------------------------------------------------------------
_nvml_lock = threading.Lock()
_nvml_pid = None  # the process that initialised NVML; a forked child must initialise again


def _nvml():
    """pynvml, initialised once per process, or None where there is no NVIDIA driver."""
    global _nvml_pid
    if pynvml is None:
        return None
    with _nvml_lock:
        if _nvml_pid != os.getpid():
            try:
                pynvml.nvmlInit()
            except pynvml.NVMLError:
                # No library, no driver, or a driver/library mismatch: all mean no usable GPU.
                # Not cached as a failure, so a later call sees a driver that was loaded since.
                return None
            _nvml_pid = os.getpid()
    return pynvml


def _text(value):
    # Older bindings return bytes, newer ones str.
    return value.decode() if isinstance(value, bytes) else value


def list_gpus():
    """Every GPU the driver reports, in NVML's order; [] without a driver. Never raises."""
    nv = _nvml()
    if nv is None:
        return []
    gpus = []
    try:
        for index in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            gpus.append(
                Gpu(
                    index=index,
                    name=_text(nv.nvmlDeviceGetName(handle)),
                    memory_total_bytes=int(nv.nvmlDeviceGetMemoryInfo(handle).total),
                    uuid=_text(nv.nvmlDeviceGetUUID(handle)),
                )
            )
    except nv.NVMLError:
        # A GPU that fell off the bus mid-listing: report what answered.
        pass
    return gpus


def visible_gpu_indices(environ=None):
    """NVML indices of the GPUs this process may use, read from CUDA_VISIBLE_DEVICES.

    Unset means every GPU; empty (or -1) means none. Entries may be indices or GPU UUIDs
    (CUDA accepts both, and a UUID prefix); MIG instances are not mapped and are skipped.
    """
    environ = os.environ if environ is None else environ
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return [gpu.index for gpu in list_gpus()]
    indices = []
    gpus = None
    for entry in (part.strip() for part in value.split(",")):
        if not entry:
            continue
        if entry.lstrip("-").isdigit():
            if int(entry) < 0:
                break  # CUDA stops reading the list at the first invalid entry
            indices.append(int(entry))
        elif entry.startswith("GPU-"):
            gpus = list_gpus() if gpus is None else gpus
            indices.extend(gpu.index for gpu in gpus if gpu.uuid.startswith(entry))
    return indices


def _gpu_sample(nv, index):
    row = {
        "index": index,
        "name": None,
        "utilization_percent": None,
        "memory_used_bytes": None,
        "memory_total_bytes": None,
    }
    try:
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        row["name"] = _text(nv.nvmlDeviceGetName(handle))
        memory = nv.nvmlDeviceGetMemoryInfo(handle)
        row["memory_used_bytes"] = int(memory.used)
        row["memory_total_bytes"] = int(memory.total)
        # Utilisation is unsupported on some parts (MIG slices, a few older boards): it alone stays None.
        row["utilization_percent"] = int(nv.nvmlDeviceGetUtilizationRates(handle).gpu)
    except nv.NVMLError:
        pass
    return row


# --- CPU and memory of a process tree ----------------------------------------------------------
# psutil's cpu_percent() measures since the previous call on the same Process object, so
# the objects are kept between samples (keyed by pid; psutil itself guards against a reused pid).
_processes = {}
_processes_lock = threading.Lock()
FIRST_SAMPLE_SECONDS = 0.1


def _process(pid):
    process = _processes.get(pid)
    if process is None or not process.is_running():
        process = _processes[pid] = psutil.Process(pid)
        process.cpu_percent(None)  # the first call only starts the measurement
        return process, True
    return process, False


def _cpu_and_rss(pid):
    """CPU percent (of one core, so a busy multi-threaded job shows over 100) and resident
    memory of the process and all its descendants, e.g. a data-loading pool."""
    with _processes_lock:
        try:
            pids = [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
        except psutil.Error:
            return 0.0, 0
        tree, fresh = [], False
        for member in pids:
            try:
                process, new = _process(member)
            except psutil.Error:
                continue  # it exited between listing and reading
            tree.append(process)
            fresh = fresh or new
        if fresh:
            # A process seen for the first time has no interval yet: measure a short one
            # rather than report 0 % on the job's first sample.
            time.sleep(FIRST_SAMPLE_SECONDS)
        cpu, rss = 0.0, 0
        for process in tree:
            try:
                with process.oneshot():
                    cpu += process.cpu_percent(None)
                    rss += process.memory_info().rss
            except psutil.Error:
                continue
        for gone in [known for known, process in _processes.items() if not process.is_running()]:
            del _processes[gone]
        return cpu, rss


def sample(pid=None, gpu_indices=None):
    """One JSON-able reading of the job's hardware.

    pid: the job's process (default: this one); its descendants are counted with it.
    gpu_indices: NVML indices of the job's GPUs (default: visible_gpu_indices()).
    GPU numbers are the whole device's, which is the job's own since each worker owns its GPUs.
    """
    pid = os.getpid() if pid is None else pid
    gpu_indices = visible_gpu_indices() if gpu_indices is None else list(gpu_indices)
    cpu_percent, rss_bytes = _cpu_and_rss(pid)
    nv = _nvml() if gpu_indices else None
    return {
        "host": host_name(),
        "pid": pid,
        "time": time.time(),
        "cpu_percent": round(cpu_percent, 1),
        "cpu_count": psutil.cpu_count() or 1,
        "rss_bytes": rss_bytes,
        "memory_total_bytes": psutil.virtual_memory().total,
        "gpus": [_gpu_sample(nv, index) for index in gpu_indices] if nv else [],
    }
