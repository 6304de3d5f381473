"""A worker killed mid-training (kill -9 of the whole worker, the work-horse included)
does not leave its experiment "running": another worker notices the stale heartbeat and
resumes it from its last snapshot, with no epoch counted twice."""

import signal
import subprocess
import sys
import time

import psutil
import pytest
from django.urls import reverse

from tests.conftest import ROOT, subprocess_env
from tests.test_training import experiment_form, mnist_dataset  # noqa: F401 - a fixture
from training.models import EpochMetric, Experiment

pytestmark = pytest.mark.django_db(transaction=True)

WORKER = [sys.executable, "manage.py", "rqworker", "--worker-class", "training.workers.TrainingWorker", "training"]
STALE_SECONDS = 3


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_a_killed_worker_is_detected_and_its_experiment_resumes(client, alice, mnist_dataset):  # noqa: F811
    epochs = 12
    client.post(reverse("experiment-new"), experiment_form(mnist_dataset, epochs=epochs, keep_snapshots=0))
    experiment = Experiment.objects.get()
    env = subprocess_env(TRAINING_STALE_SECONDS=str(STALE_SECONDS))

    # The first worker trains a few epochs, then dies without a word: parent and work-horse.
    first = subprocess.Popen(WORKER, cwd=ROOT, env=env)
    try:
        wait_for(lambda: EpochMetric.objects.filter(experiment=experiment).count() >= 2, 240, "two epochs")
    finally:
        # RQ puts its work-horse in a session of its own: kill it by name, not by group.
        for process in [*psutil.Process(first.pid).children(recursive=True), psutil.Process(first.pid)]:
            process.send_signal(signal.SIGKILL)
        first.wait()
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.RUNNING  # nobody has noticed yet
    done_before = EpochMetric.objects.filter(experiment=experiment).count()
    assert done_before < epochs
    time.sleep(STALE_SECONDS + 1)

    # A second worker, free again, finds the stale heartbeat and resumes the run.
    second = subprocess.run([*WORKER, "--burst"], cwd=ROOT, env=env, timeout=300, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]

    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.DONE, experiment.error
    assert experiment.attempts == 2
    epochs_recorded = list(experiment.metrics.values_list("epoch", flat=True))
    assert epochs_recorded == list(range(1, epochs + 1))
    messages = " ".join(experiment.status_changes.values_list("message", flat=True))
    assert "stopped responding" in messages
    assert "Resuming from the snapshot" in " ".join(experiment.log_lines.values_list("message", flat=True))


def test_a_worker_that_keeps_dying_is_not_retried_for_ever(alice, settings):
    from django.utils import timezone

    from tests.factories import make_experiment
    from training.recovery import recover_stalled

    settings.TRAINING_MAX_ATTEMPTS = 2
    stale = timezone.now() - timezone.timedelta(seconds=settings.TRAINING_STALE_SECONDS + 5)
    experiment = make_experiment(alice, status=Experiment.Status.RUNNING, attempts=2)
    Experiment.objects.filter(pk=experiment.pk).update(heartbeat=stale)

    assert recover_stalled() == [experiment.pk]

    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.FAILED
    assert "2 times" in experiment.error


def test_a_live_heartbeat_is_left_alone(alice):
    from django.utils import timezone

    from tests.factories import make_experiment
    from training.recovery import recover_stalled

    experiment = make_experiment(alice, status=Experiment.Status.RUNNING, attempts=1)
    Experiment.objects.filter(pk=experiment.pk).update(heartbeat=timezone.now())
    assert recover_stalled() == []
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.RUNNING


def test_a_queued_experiment_whose_job_redis_lost_is_queued_again(client, alice):
    import django_rq

    from tests.factories import make_dataset
    from training.recovery import requeue_lost

    client.force_login(alice)
    client.post(reverse("experiment-new"), experiment_form(make_dataset(alice), batch_size=4))
    experiment = Experiment.objects.get()
    queue = django_rq.get_queue("training")
    assert experiment.rq_job_id in queue.job_ids
    queue.connection.flushdb()  # what a Redis restart does to the queues

    assert requeue_lost() == [experiment.pk]
    assert Experiment.objects.get().rq_job_id in queue.job_ids
    assert requeue_lost() == []  # nothing twice
