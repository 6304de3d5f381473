"""Cheap stand-ins for training.jobs.train that tests/test_workers.py sends to real
workers. Like a training job, each takes an experiment id first (the console reads it)."""

import json
import os
import time
from pathlib import Path

import rq


def record(experiment_id, path):
    """Write down where this job ran: its queue, its worker and the devices it was given."""
    job = rq.get_current_job()
    report = {
        "experiment": experiment_id,
        "queue": job.origin,
        "worker": job.worker_name,
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS"),
        "PLATFORM_DEVICE_QUEUE": os.environ.get("PLATFORM_DEVICE_QUEUE"),
    }
    partial = Path(f"{path}.partial")
    partial.write_text(json.dumps(report))
    partial.rename(path)  # the test never reads half a file


def hold(experiment_id, release_path, timeout=60):
    """Keep the worker busy until the test creates release_path."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(release_path) and time.monotonic() < deadline:
        time.sleep(0.05)
