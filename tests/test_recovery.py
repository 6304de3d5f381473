"""The fault drills, against real processes: a work-horse killed mid-epoch, a worker
killed under its work-horse, Redis stopped and started again. And the recovery rules
each drill relies on, one by one.

Every drill measures what a person would: how long until the platform noticed, and
whether the work came out whole (every epoch exactly once)."""

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import timedelta

import psutil
import pytest
from django.urls import reverse
from django.utils import timezone

from datasets.models import Dataset
from jobs import recovery
from jobs.models import this_worker
from tests.browser import free_port, wait_for_port, web_tier
from tests.conftest import ROOT, subprocess_env
from tests.factories import make_dataset, make_experiment, make_token
from tests.test_training import experiment_form, mnist_dataset  # noqa: F401 - a fixture
from tests.test_workers import start_trainworkers, stop
from training import workers
from training.models import EpochMetric, Experiment

WORKER = [sys.executable, "manage.py", "rqworker", "--worker-class", "training.workers.TrainingWorker"]
DETECTION_GOAL_SECONDS = 15


def wait_for(condition, timeout, what, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    tail = f"\n--- log ---\n{open(log).read()[-4000:]}" if log else ""
    pytest.fail(f"timed out after {timeout} s waiting for {what}{tail}")


def epochs_of(experiment):
    return list(
        EpochMetric.objects.filter(experiment=experiment, train_loss__isnull=False).values_list("epoch", flat=True)
    )


def messages_of(experiment):
    return " | ".join(experiment.status_changes.values_list("message", flat=True))


def horses_of(worker_pid):
    """The work-horses RQ forked under a worker process."""
    try:
        return psutil.Process(worker_pid).children()
    except psutil.NoSuchProcess:
        return []


def end(process):
    """SIGTERM, as an operator would; SIGKILL if it has not stopped within 30 s, so that no
    worker of this test takes a later test's jobs."""
    process.terminate()
    try:
        process.wait(30)
        return True
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
        return False


def report(what, seconds):
    # Shown with -s, and in the log of a failing run: the README's reliability table comes from here.
    print(f"\n[drill] {what}: {seconds:.1f} s")


# --- Drill: kill -9 of a work-horse mid-epoch -----------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_killed_work_horse_is_noticed_at_once_and_its_experiment_resumes(client, alice, mnist_dataset, tmp_path):  # noqa: F811
    epochs = 24
    client.post(reverse("experiment-new"), experiment_form(mnist_dataset, epochs=epochs, keep_snapshots=0))
    experiment = Experiment.objects.get()
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([*WORKER, "training"], cwd=ROOT, env=subprocess_env(), stdout=open(log, "w"),
                              stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: experiment.snapshots.count() >= 2, 240, "two snapshots", log)
        (horse,) = horses_of(worker.pid)
        horse.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: Experiment.objects.get(pk=experiment.pk).attempts == 2, 60, "the second attempt", log)
        noticed = time.monotonic() - killed
        report("work-horse killed -> experiment running again", noticed)
        assert noticed <= DETECTION_GOAL_SECONDS
        wait_for(lambda: Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.DONE, 300, "done", log)
    finally:
        stopped = end(worker)
    assert stopped, "the worker did not stop on SIGTERM within 30 s"

    experiment.refresh_from_db()
    assert epochs_of(experiment) == list(range(1, epochs + 1))  # every epoch exactly once
    assert experiment.attempts == 2
    assert "The worker stopped; resuming from epoch " in messages_of(experiment)
    # What the page's log shows as it happens, with the epoch it resumes from.
    resumed = experiment.log_lines.filter(level="warning", message__startswith="The worker stopped").get()
    assert "(attempt 2 of 3)" in resumed.message


# --- Drill: kill -9 of a worker parent ------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_a_killed_worker_takes_its_work_horse_with_it_and_the_device_is_never_double_booked(
    client,
    alice,
    mnist_dataset,  # noqa: F811
    tmp_path,
):
    host = f"test-{uuid.uuid4().hex[:8]}"
    device = workers.device_queue_name(host, [0])
    log = tmp_path / "trainworkers.log"
    with open(log, "w") as out:
        supervisor = start_trainworkers(host, out, "--fake-gpus", "1")
    try:
        wait_for(lambda: device in dict(workers.worker_device_choices()), 60, "the worker to register", log)
        for name in ("first", "second"):
            form = experiment_form(mnist_dataset, name=name, epochs=12, keep_snapshots=0, queue=device)
            assert client.post(reverse("experiment-new"), form).status_code == 302
        first, second = Experiment.objects.get(name="first"), Experiment.objects.get(name="second")
        wait_for(lambda: first.snapshots.count() >= 2, 240, "two snapshots of the first", log)
        (parent,) = psutil.Process(supervisor.pid).children()
        (horse,) = parent.children()
        parent.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        # The kernel ends the work-horse with its worker: nothing trains on under PID 1.
        gone, alive = psutil.wait_procs([horse], timeout=5)
        assert alive == []

        running_at_once = 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            statuses = dict(Experiment.objects.filter(pk__in=[first.pk, second.pk]).values_list("name", "status"))
            running_at_once = max(running_at_once, list(statuses.values()).count(Experiment.Status.RUNNING))
            if Experiment.objects.get(pk=first.pk).attempts == 2 and not getattr(first, "noticed", None):
                first.noticed = time.monotonic() - killed
            if set(statuses.values()) == {Experiment.Status.DONE}:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"not both done: {statuses}\n{log.read_text()[-3000:]}")
    finally:
        stop(supervisor)

    report("worker killed -> its experiment queued again (after the restart)", first.noticed)
    assert running_at_once == 1
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.attempts, second.attempts) == (2, 1)
    assert epochs_of(first) == list(range(1, 13)) and epochs_of(second) == list(range(1, 13))
    assert "The worker stopped; resuming from epoch " in messages_of(first)


# --- Drill: Redis stopped and started again -------------------------------------------------------------
class OwnRedis:
    """A redis-server of the test's own, on its own port, keeping nothing on disk: a
    restart loses every queue, as a crash of a cache would."""

    def __init__(self, folder):
        self.port = free_port()
        self.folder = folder
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self):
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self.answers, 10, "redis-server to answer")

    def answers(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            return True
        except OSError:
            return False

    def stop(self):
        self.process.kill()
        self.process.wait(10)


def http(url, *, cookie=None, token=None, body=None):
    headers = {"Accept": "application/json"}
    if cookie:
        headers["Cookie"] = cookie
    if token:
        headers["Authorization"] = f"Token {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.mark.django_db(transaction=True)
def test_with_redis_down_pages_answer_work_is_kept_and_runs_when_it_is_back(
    client,
    alice,
    mnist_root,
    mnist_dataset,  # noqa: F811
    tmp_path,
):
    redis_server = OwnRedis(tmp_path)
    redis_server.start()
    env = subprocess_env(REDIS_URL=redis_server.url)
    host = f"test-{uuid.uuid4().hex[:8]}"
    device = workers.device_queue_name(host, [])
    worker_env = {**env, workers.ENV_QUEUE: device, workers.ENV_LABEL: f"CPU on {host}", "JAX_PLATFORMS": "cpu"}
    port = free_port()
    worker_log, web_log = tmp_path / "worker.log", tmp_path / "web.log"
    processes = [
        subprocess.Popen([*WORKER, "datasets", "training"], cwd=ROOT, env=worker_env, stdout=open(worker_log, "w"),
                         stderr=subprocess.STDOUT),
        web_tier(port, web_log, REDIS_URL=redis_server.url),
    ]  # fmt: skip
    import redis as redis_client

    own = redis_client.Redis.from_url(redis_server.url)

    def device_listed():
        try:
            return device in {w.device_queue for w in workers.TrainingWorker.all(connection=own)}
        except redis_client.RedisError:
            return False

    try:
        wait_for(device_listed, 60, "the worker to register", worker_log)
        wait_for_port(port, processes[1], lambda: f"the web tier did not start:\n{web_log.read_text()}", seconds=60)
        wait_for(lambda: http(f"http://127.0.0.1:{port}/accounts/login/")[0] == 200, 60, "the web tier", web_log)
        client.force_login(alice)
        cookie = f"sessionid={client.cookies['sessionid'].value}"
        token = make_token(alice).key
        base = f"http://127.0.0.1:{port}"

        redis_server.stop()
        status, page = http(f"{base}/", cookie=cookie)
        assert status == 200 and "does not answer" in page
        status, page = http(f"{base}/experiments/new/", cookie=cookie)
        assert status == 200 and "does not answer" in page
        status, body = http(f"{base}/api/datasets/", token=token, body={
            "name": "built after the outage", "source_folder": str(mnist_root / "test"), "width": 28, "height": 28,
        })  # fmt: skip
        assert status == 201, body
        status, body = http(f"{base}/api/experiments/", token=token, body={
            "name": "queued during the outage", "dataset": mnist_dataset.pk, "epochs": 1, "batch_size": 32,
        })  # fmt: skip
        assert status == 201, body
        dataset = Dataset.objects.get(name="built after the outage")
        experiment = Experiment.objects.get(name="queued during the outage")
        assert dataset.status == experiment.status == "queued"

        time.sleep(2)  # a short outage: the worker keeps trying
        redis_server.start()
        back = time.monotonic()
        wait_for(device_listed, 30, "the worker to register again", worker_log)
        report("Redis back -> the worker's device listed again", time.monotonic() - back)
        wait_for(lambda: Dataset.objects.get(pk=dataset.pk).status == "done", 180, "the dataset built", worker_log)
        wait_for(lambda: Experiment.objects.get(pk=experiment.pk).status == "done", 180, "the experiment", worker_log)
        report("Redis back -> both jobs done", time.monotonic() - back)
    finally:
        stopped = [end(process) for process in processes]
        if redis_server.process.poll() is None:
            redis_server.stop()
    assert all(stopped), "a process did not stop on SIGTERM within 30 s"
    assert "Traceback" not in web_log.read_text()
    assert "queued again" in Dataset.objects.get(pk=dataset.pk).log_text


# --- The rules the drills rely on -------------------------------------------------------------------------
def stale(seconds_ago):
    return timezone.now() - timedelta(seconds=seconds_ago)


def test_a_job_whose_heartbeat_stopped_on_another_host_is_queued_again(alice, settings):
    experiment = make_experiment(alice, status=Experiment.Status.RUNNING, attempts=1, worker="elsewhere:42")
    Experiment.objects.filter(pk=experiment.pk).update(heartbeat=stale(settings.JOB_STALE_SECONDS + 1))

    assert recovery.recover_stalled(Experiment) == [experiment.pk]
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.QUEUED and experiment.job_id.endswith("attempt-2")
    assert "The worker stopped; starting again from the first epoch (attempt 2 of 3)" in messages_of(experiment)


def test_a_job_whose_worker_process_is_gone_on_this_host_is_queued_again_at_once(alice):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    dataset = make_dataset(
        alice, status=Dataset.Status.RUNNING, attempts=1, worker=f"{socket.gethostname()}:{dead.pid}"
    )
    Dataset.objects.filter(pk=dataset.pk).update(heartbeat=timezone.now())  # fresh: only the pid tells

    assert recovery.recover_stalled(Dataset) == [dataset.pk]
    assert Dataset.objects.get(pk=dataset.pk).status == Dataset.Status.QUEUED


def test_a_live_job_is_left_alone(alice):
    experiment = make_experiment(alice, status=Experiment.Status.RUNNING, attempts=1, worker=this_worker())
    Experiment.objects.filter(pk=experiment.pk).update(heartbeat=timezone.now())
    assert recovery.recover_stalled(Experiment) == []
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.RUNNING


def test_a_job_that_keeps_dying_is_not_retried_for_ever(alice, settings):
    settings.JOB_MAX_ATTEMPTS = 2
    experiment = make_experiment(alice, status=Experiment.Status.RUNNING, attempts=2, worker="elsewhere:1")
    Experiment.objects.filter(pk=experiment.pk).update(heartbeat=stale(settings.JOB_STALE_SECONDS + 5))

    assert recovery.recover_stalled(Experiment) == [experiment.pk]
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.FAILED
    assert experiment.error == "The worker stopped, 2 times; not retrying again."


@pytest.mark.parametrize("model", ["dataset", "experiment"])
def test_a_queued_job_whose_place_redis_lost_is_queued_again(alice, model, django_capture_on_commit_callbacks):
    import django_rq

    job = make_dataset(alice, status="queued") if model == "dataset" else make_experiment(alice, status="queued")
    with django_capture_on_commit_callbacks(execute=True):
        job.enqueue()
    queue = django_rq.get_queue(job.default_queue)
    assert job.job_id in queue.job_ids
    queue.connection.flushdb()  # what a Redis restart does to the queues
    type(job).objects.filter(pk=job.pk).update(queued=stale(recovery.QUEUED_GRACE_SECONDS + 1))

    with django_capture_on_commit_callbacks(execute=True):
        assert recovery.requeue_lost(type(job)) == [job.pk]
    assert job.job_id in queue.job_ids
    assert recovery.requeue_lost(type(job)) == []  # nothing twice


def test_a_row_queued_moments_ago_is_not_queued_twice(alice):
    experiment = make_experiment(alice, status="queued", queued=timezone.now(), job_id="experiment-x-attempt-1")
    assert recovery.requeue_lost(Experiment) == []
    assert experiment.job_id == Experiment.objects.get(pk=experiment.pk).job_id


def test_a_stale_queue_entry_cannot_claim_a_newer_attempt(alice):
    experiment = make_experiment(alice, status="queued", job_id="experiment-1-attempt-2")
    assert not experiment.claim("experiment-1-attempt-1")
    assert experiment.claim("experiment-1-attempt-2")
    assert not experiment.claim("experiment-1-attempt-2")  # a second run of the same job does nothing


def test_a_resumed_job_keeps_its_first_start(alice):
    experiment = make_experiment(alice, status="queued", job_id="j1")
    experiment.claim("j1")
    first_start = experiment.started
    experiment.finish(Experiment.Status.ABORTED)
    experiment.snapshots.create(epoch=1, path="/nowhere")
    assert experiment.resume()
    experiment.claim(experiment.job_id)
    assert experiment.started == first_start and experiment.attempts == 2


def test_looking_at_a_job_never_changes_it(client, alice):
    """Recovery is the workers' work: a page or an API read of a job whose worker died
    shows it as it is."""
    dataset = make_dataset(alice, status=Dataset.Status.RUNNING, worker="elsewhere:1", job_id="dataset-gone")
    Dataset.objects.filter(pk=dataset.pk).update(heartbeat=stale(3600))
    before = Dataset.objects.filter(pk=dataset.pk).values().get()
    client.force_login(alice)
    assert client.get(dataset.get_absolute_url()).status_code == 200
    assert client.get(reverse("api-dataset", args=[dataset.pk])).status_code == 200
    assert Dataset.objects.filter(pk=dataset.pk).values().get() == before


def test_queueing_while_redis_is_down_keeps_the_row(alice, monkeypatch):
    """The on-commit enqueue meets a Redis that does not answer (a real refused connection):
    the row stays queued for recovery rather than the request failing after the commit."""
    import redis as redis_client
    import rq

    from jobs import queues

    nobody = redis_client.Redis(port=free_port())
    monkeypatch.setattr(queues, "get_queue", lambda name: rq.Queue(name, connection=nobody))
    dataset = make_dataset(alice, status="queued")
    assert queues.enqueue("datasets", "datasets.jobs.build", dataset.pk, job_id="dataset-1-attempt-1") is False
    assert Dataset.objects.get(pk=dataset.pk).status == "queued"


def test_the_admin_shows_each_job_with_its_lifecycle_and_log(client, alice):
    from accounts.models import User

    root = User.objects.create_superuser("root", password="root-password")
    experiment = make_experiment(alice, status="queued", job_id="j1")
    experiment.claim("j1")
    experiment.log("Epoch 1: train loss 0.5")
    dataset = experiment.dataset
    dataset.log("Found 2 classes")
    client.force_login(root)
    for url in (
        reverse("admin:training_experiment_change", args=[experiment.pk]),
        reverse("admin:datasets_dataset_change", args=[dataset.pk]),
        reverse("admin:training_experiment_changelist"),
        reverse("admin:datasets_dataset_changelist"),
    ):
        response = client.get(url)
        assert response.status_code == 200, url
    page = client.get(reverse("admin:training_experiment_change", args=[experiment.pk])).content.decode()
    assert "Epoch 1: train loss 0.5" in page and this_worker() in page
    page = client.get(reverse("admin:datasets_dataset_change", args=[dataset.pk])).content.decode()
    assert "Found 2 classes" in page


@pytest.mark.django_db  # recovery closes stale connections first
def test_a_stop_signal_during_recovery_still_stops_the_worker(monkeypatch):
    """RQ stops an idle worker by raising StopRequested from its signal handler, wherever
    the worker is: recovery, which runs in the idle loop, must let it through."""
    from rq.exceptions import StopRequested

    from jobs.worker import Worker

    def interrupted():
        raise StopRequested

    monkeypatch.setattr(recovery, "recover", interrupted)
    worker = Worker.__new__(Worker)
    with pytest.raises(StopRequested):
        worker.recover()


@pytest.mark.django_db(transaction=True)
def test_an_idle_worker_stops_at_once_on_sigterm(tmp_path):
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([*WORKER, "datasets"], cwd=ROOT, env=subprocess_env(), stdout=open(log, "w"),
                              stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: "Listening on" in log.read_text(), 60, "the worker to listen", log)
        time.sleep(6)  # past a recovery round
        worker.terminate()
        stopping = time.monotonic()
        worker.wait(15)
        assert time.monotonic() - stopping < 10
    finally:
        if worker.poll() is None:
            worker.kill()
