"""Training workers and their devices: sampling, queue names, and `manage.py trainworkers`
run for real — its worker processes, each with its own CUDA_VISIBLE_DEVICES and device
queue, take jobs from their device queues and from the one shared queue.

This machine has no GPU, so the workers are started with --fake-gpus: they get the device
queues and CUDA_VISIBLE_DEVICES of GPUs 0 and 1 and run on the CPU. Each run uses a host
name of its own, so its device queues are its own on the suite's Redis.

The live tests share one supervisor (module fixture) and run in file order; the last one
stops it.
"""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, subprocess_env
from training import devices, workers

STARTUP_SECONDS = 60  # Django and RQ start in a few seconds; a loaded 2-core machine is slower
JOB_SECONDS = 30


def wait_for(predicate, what, timeout=JOB_SECONDS, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    tail = f"\n--- trainworkers log ---\n{Path(log).read_text()[-4000:]}" if log else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{tail}")


def has_nvidia_driver():
    return Path("/proc/driver/nvidia/version").exists()


# --- Sampling and naming (no worker) ---------------------------------------------------------------
def test_sample_reads_the_job_process_and_no_gpu_here():
    first = devices.sample(os.getpid(), [])
    assert first["host"] == devices.host_name()
    assert first["gpus"] == []
    assert first["cpu_percent"] >= 0
    assert 10 * 2**20 < first["rss_bytes"] < first["memory_total_bytes"]
    json.dumps(first)  # stored on the Experiment row and broadcast as is

    spin_until = time.monotonic() + 0.3
    while time.monotonic() < spin_until:
        pass
    assert devices.sample(os.getpid(), [])["cpu_percent"] > 10

    if not has_nvidia_driver():
        assert devices.list_gpus() == []
        # Asked about a GPU that cannot be read, it reports none rather than raising.
        assert devices.sample(os.getpid(), [0])["gpus"] == []


def test_sample_counts_the_job_children():
    before = devices.sample(os.getpid(), [])["rss_bytes"]
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; b = bytearray(200 * 2**20); print(flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
    )
    try:
        child.stdout.readline()  # its memory is allocated
        assert devices.sample(os.getpid(), [])["rss_bytes"] > before + 150 * 2**20
    finally:
        child.kill()
        child.wait()


def test_visible_gpus_follow_cuda_visible_devices():
    assert devices.visible_gpu_indices({"CUDA_VISIBLE_DEVICES": "1,0"}) == [1, 0]
    assert devices.visible_gpu_indices({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert devices.visible_gpu_indices({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert devices.visible_gpu_indices({"CUDA_VISIBLE_DEVICES": "0,-1,1"}) == [0]


class FakeNvml:
    """The slice of pynvml that training.devices uses, for two H100s; the second one does
    not report utilisation (as a MIG slice would not)."""

    class NVMLError(Exception):
        pass

    class Memory:
        def __init__(self, used, total):
            self.used, self.total = used, total

    class Utilization:
        gpu = 87

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return b"NVIDIA H100" if handle else "NVIDIA H100"  # older bindings answer bytes

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-{handle}abc"

    def nvmlDeviceGetMemoryInfo(self, handle):
        return self.Memory(used=(handle + 1) * 2**30, total=80 * 2**30)

    def nvmlDeviceGetUtilizationRates(self, handle):
        if handle:
            raise self.NVMLError("Not Supported")
        return self.Utilization()


def test_gpus_are_listed_and_sampled_through_nvml(monkeypatch):
    monkeypatch.setattr(devices, "pynvml", FakeNvml())
    monkeypatch.setattr(devices, "_nvml_pid", None)
    assert devices.list_gpus() == [
        devices.Gpu(0, "NVIDIA H100", 80 * 2**30, "GPU-0abc"),
        devices.Gpu(1, "NVIDIA H100", 80 * 2**30, "GPU-1abc"),
    ]
    assert devices.visible_gpu_indices({}) == [0, 1]
    assert devices.visible_gpu_indices({"CUDA_VISIBLE_DEVICES": "GPU-1"}) == [1]  # a UUID prefix, as CUDA takes

    gpus = devices.sample(os.getpid(), [0, 1])["gpus"]
    assert gpus == [
        {
            "index": 0,
            "name": "NVIDIA H100",
            "utilization_percent": 87,
            "memory_used_bytes": 2**30,
            "memory_total_bytes": 80 * 2**30,
        },
        {
            "index": 1,
            "name": "NVIDIA H100",
            "utilization_percent": None,
            "memory_used_bytes": 2 * 2**30,
            "memory_total_bytes": 80 * 2**30,
        },
    ]


def test_plan_one_worker_per_gpu_or_group_else_one_on_the_cpu():
    gpus = [devices.Gpu(i, "NVIDIA H100", 80 * 2**30, f"GPU-{i}") for i in range(4)]

    singles = workers.plan_workers("host-a", gpus)
    assert [s.queue for s in singles] == [f"training@host-a/gpu{i}" for i in range(4)]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in singles] == ["0", "1", "2", "3"]
    assert singles[0].label == "GPU 0 · NVIDIA H100 on host-a"
    assert all(s.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and "JAX_PLATFORMS" not in s.env for s in singles)

    pairs = workers.plan_workers("host-a", gpus, gpus_per_worker=2)
    assert [(s.queue, s.env["CUDA_VISIBLE_DEVICES"]) for s in pairs] == [
        ("training@host-a/gpu0+1", "0,1"),
        ("training@host-a/gpu2+3", "2,3"),
    ]
    assert pairs[1].label == "GPUs 2+3 · 2 × NVIDIA H100 on host-a"

    (cpu,) = workers.plan_workers("host-a", [])
    assert (cpu.queue, cpu.label, cpu.kind) == ("training@host-a/cpu", "CPU on host-a", "cpu")
    assert cpu.env["CUDA_VISIBLE_DEVICES"] == "" and cpu.env["JAX_PLATFORMS"] == "cpu"
    assert cpu.env[workers.ENV_QUEUE] == cpu.queue

    assert workers.parse_device_queue("training@host-a/gpu0+1") == ("host-a", [0, 1], 0)
    assert workers.parse_device_queue("training@host-a/cpu2") == ("host-a", [], 2)
    assert workers.parse_device_queue("training") is None
    with pytest.raises(ValueError):
        workers.queue_for("datasets")


def test_the_supervisor_and_worker_parents_never_import_jax():
    # They fork the jobs; a process that initialised JAX deadlocks when it forks.
    code = (
        "import sys, django; django.setup(); "
        "import training.management.commands.trainworkers, training.workers, training.devices; "
        "assert 'jax' not in sys.modules, 'jax was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=subprocess_env(), timeout=60)


# --- Real workers -----------------------------------------------------------------------------
def start_trainworkers(host, log, *args, **env):
    return subprocess.Popen(
        [sys.executable, "manage.py", "trainworkers", "--host", host, *args],
        cwd=ROOT,
        env=subprocess_env(**env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop(supervisor):
    """SIGTERM, as an operator would; then kill whatever is left of the tree."""
    if supervisor.poll() is not None:
        return
    tree = psutil.Process(supervisor.pid).children(recursive=True)
    supervisor.send_signal(signal.SIGTERM)
    try:
        supervisor.wait(30)
    except subprocess.TimeoutExpired:
        pass
    for process in [*tree, psutil.Process(supervisor.pid) if supervisor.poll() is None else None]:
        try:
            process and process.kill()
        except psutil.Error:
            pass


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """`trainworkers --fake-gpus 2`: two worker processes, for GPU 0 and GPU 1."""
    folder = tmp_path_factory.mktemp("fleet")
    host = f"test-{uuid.uuid4().hex[:8]}"
    log_path = folder / "trainworkers.log"
    queues = [workers.device_queue_name(host, [0]), workers.device_queue_name(host, [1])]
    with open(log_path, "w") as log:
        supervisor = start_trainworkers(host, log, "--fake-gpus", "2")
    try:
        wait_for(
            lambda: set(queues) <= {q for q, _ in workers.worker_device_choices()},
            "both workers to register",
            STARTUP_SECONDS,
            log_path,
        )
        yield {
            "supervisor": supervisor,
            "host": host,
            "gpu0": queues[0],
            "gpu1": queues[1],
            "dir": folder,
            "log": log_path,
        }
    finally:
        stop(supervisor)


def board_row(board, queue):
    return next(row for row in board if row["queue"] == queue)


def test_choices_and_board_list_both_live_workers(fleet):
    choices = dict(workers.worker_device_choices())
    assert next(iter(choices.items())) == ("training", "Next available")
    assert choices[fleet["gpu0"]] == f"GPU 0 · Fake GPU on {fleet['host']}"
    assert choices[fleet["gpu1"]] == f"GPU 1 · Fake GPU on {fleet['host']}"

    board = workers.device_board()
    assert board[0]["queue"] == "training" and board[0]["kind"] == "shared"
    for name, index in (("gpu0", 0), ("gpu1", 1)):
        row = board_row(board, fleet[name])
        assert (row["kind"], row["host"], row["gpu_indices"], row["state"]) == ("gpu", fleet["host"], [index], "idle")
        assert row["worker"].startswith(fleet[name]) and row["current"] is None and row["waiting"] == []


def test_each_job_runs_on_its_device_and_shared_jobs_on_either(fleet):
    folder = fleet["dir"] / "routing"
    folder.mkdir()
    sent = {}  # experiment id -> queue
    for experiment_id, queue in enumerate(
        [fleet["gpu0"], fleet["gpu1"], "training", fleet["gpu0"], "training", fleet["gpu1"], "training", "training"],
        start=1,
    ):
        workers.queue_for(queue).enqueue(
            "tests.worker_jobs.record", experiment_id, str(folder / f"{experiment_id}.json")
        )
        sent[experiment_id] = queue

    wait_for(lambda: len(list(folder.glob("*.json"))) == len(sent), "every job to run", log=fleet["log"])
    device_of = {fleet["gpu0"]: "0", fleet["gpu1"]: "1"}
    for experiment_id, queue in sent.items():
        ran = json.loads((folder / f"{experiment_id}.json").read_text())
        assert ran["queue"] == queue
        # The worker that took it owns a device: the one asked for, or either for the shared queue.
        assert ran["PLATFORM_DEVICE_QUEUE"] in (device_of if queue == "training" else [queue])
        assert ran["worker"].startswith(ran["PLATFORM_DEVICE_QUEUE"] + ".")
        assert ran["CUDA_VISIBLE_DEVICES"] == device_of[ran["PLATFORM_DEVICE_QUEUE"]]
        assert ran["JAX_PLATFORMS"] == "cpu"  # fake GPUs train on the CPU


def test_board_shows_what_runs_and_waits_on_each_device(fleet):
    folder = fleet["dir"] / "board"
    folder.mkdir()
    release = folder / "release"
    workers.queue_for(fleet["gpu0"]).enqueue("tests.worker_jobs.hold", 101, str(release))
    workers.queue_for(fleet["gpu1"]).enqueue("tests.worker_jobs.hold", 102, str(release))
    wait_for(
        lambda: all(board_row(workers.device_board(), fleet[n])["state"] == "busy" for n in ("gpu0", "gpu1")),
        "both workers to be busy",
        log=fleet["log"],
    )
    # Both devices busy: a job for GPU 0 waits for it, and a job for any device waits in the shared queue.
    workers.queue_for(fleet["gpu0"]).enqueue("tests.worker_jobs.record", 103, str(folder / "103.json"))
    workers.queue_for("training").enqueue("tests.worker_jobs.record", 104, str(folder / "104.json"))
    try:
        board = workers.device_board()
        gpu0, gpu1 = board_row(board, fleet["gpu0"]), board_row(board, fleet["gpu1"])
        assert (gpu0["state"], gpu0["current"], gpu0["waiting"]) == ("busy", 101, [103])
        assert (gpu1["state"], gpu1["current"], gpu1["waiting"]) == ("busy", 102, [])
        assert 104 in board[0]["waiting"]
    finally:
        release.touch()
    wait_for(lambda: (folder / "103.json").exists() and (folder / "104.json").exists(), "the waiting jobs to run")
    assert json.loads((folder / "103.json").read_text())["CUDA_VISIBLE_DEVICES"] == "0"


def test_a_worker_that_dies_is_restarted_and_the_dead_one_forgotten(fleet):
    (dead,) = [w for w in workers.live_workers() if w.device_queue == fleet["gpu1"]]
    os.kill(dead.pid, signal.SIGKILL)

    def replaced():
        mine = [w for w in workers.live_workers() if w.device_queue == fleet["gpu1"]]
        return len(mine) == 1 and mine[0].pid != dead.pid and mine[0]

    successor = wait_for(replaced, "the worker to be restarted", STARTUP_SECONDS, fleet["log"])
    assert psutil.Process(successor.pid).ppid() == fleet["supervisor"].pid

    path = fleet["dir"] / "after-restart.json"
    workers.queue_for(fleet["gpu1"]).enqueue("tests.worker_jobs.record", 105, str(path))
    wait_for(path.exists, "a job on the restarted worker")
    assert json.loads(path.read_text())["worker"] == successor.name


def test_sigterm_stops_every_worker_and_leaves_no_process(fleet):
    supervisor = fleet["supervisor"]
    tree = psutil.Process(supervisor.pid).children(recursive=True)
    assert len(tree) == 2

    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == []
    # Stopped workers unregister: neither the form nor the console offers them any more.
    choices = {queue for queue, _ in workers.worker_device_choices()}
    assert not choices & {fleet["gpu0"], fleet["gpu1"]}


def test_without_a_gpu_one_cpu_worker_trains_and_burst_exits(tmp_path):
    # CUDA_VISIBLE_DEVICES="" hides any GPU from the command, as it would from CUDA.
    host = f"test-{uuid.uuid4().hex[:8]}"
    cpu_queue = workers.device_queue_name(host, [])
    path = tmp_path / "cpu.json"
    workers.queue_for(cpu_queue).enqueue("tests.worker_jobs.record", 201, str(path))
    with open(tmp_path / "log", "w") as log:
        command = start_trainworkers(host, log, "--burst", CUDA_VISIBLE_DEVICES="")
        try:
            assert command.wait(STARTUP_SECONDS) == 0, (tmp_path / "log").read_text()
        finally:
            stop(command)
    ran = json.loads(path.read_text())
    assert (ran["queue"], ran["PLATFORM_DEVICE_QUEUE"]) == (cpu_queue, cpu_queue)
    assert (ran["CUDA_VISIBLE_DEVICES"], ran["JAX_PLATFORMS"]) == ("", "cpu")
    assert "training runs on the CPU" in (tmp_path / "log").read_text()
