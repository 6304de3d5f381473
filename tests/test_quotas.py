"""Per-team quotas: who sets them, how work over them waits and starts by itself, the race for
a team's last slot between real workers, the month's device-hours, storage refusals with the
figures, and the meters on the team page and the console."""

import io
import subprocess
import sys
import time
import zipfile
from datetime import timedelta

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from accounts.models import AuditEntry, Membership, User
from jobs.recovery import requeue_lost, rq_job_alive
from quotas import usage
from quotas.models import DeviceUsage, TeamQuota
from tests.conftest import ROOT, subprocess_env
from tests.factories import make_dataset, make_experiment, make_token
from training.models import Experiment

GB = 10**9


@pytest.fixture
def root(db):
    return User.objects.create_superuser("root", password="root-password")


@pytest.fixture
def vera(team):
    user = User.objects.create_user("vera", password="vera-password")
    Membership.objects.create(user=user, team=team, role=Membership.Role.VIEWER)
    return user


def set_quota(team, **limits):
    quota, _ = TeamQuota.objects.update_or_create(team=team, defaults=limits)
    return quota


def queued_experiment(owner, team, dataset=None, **fields):
    experiment = make_experiment(owner, dataset, team=team, status=Experiment.Status.QUEUED, **fields)
    experiment.submit()
    return experiment


# --- Who sets the limits ----------------------------------------------------------------------


def test_an_organisation_admin_sets_the_limits_and_it_is_audited(client, root, team):
    client.force_login(root)
    response = client.post(reverse("team-quota", args=[team.pk]), {"running": 4, "hours": 100, "storage_gb": 10})
    assert response.status_code == 302
    quota = TeamQuota.objects.get(team=team)
    assert (quota.max_running, quota.max_device_hours, quota.max_stored_bytes) == (4, 100, 10 * GB)
    entry = AuditEntry.objects.get(team=team, action=AuditEntry.Action.ADMIN)
    assert entry.actor == root
    assert "quota: organisation limit running experiments: unlimited → 4" in entry.detail


def test_a_team_admin_narrows_the_limits_but_cannot_raise_them(client, alice, team):
    set_quota(team, max_running=4, max_device_hours=100)
    client.force_login(alice)
    client.post(reverse("team-quota", args=[team.pk]), {"running": 2, "hours": "", "storage_gb": 5})
    quota = TeamQuota.objects.get(team=team)
    assert (quota.running_limit, quota.hours_limit, quota.bytes_limit) == (2, 100, 5 * GB)
    assert quota.max_running == 4  # the organisation's own stays as it was

    response = client.post(reverse("team-quota", args=[team.pk]), {"running": 5}, follow=True)
    assert "The organisation allows at most 4; a team admin may only set less." in response.content.decode()
    quota.refresh_from_db()
    assert quota.running_limit == 2
    assert AuditEntry.objects.filter(team=team, action=AuditEntry.Action.ADMIN).count() == 1


@pytest.mark.parametrize("who,status", [("bob", 403), ("vera", 403), ("charlie", 404)])
def test_members_viewers_and_outsiders_cannot_change_the_quota(client, alice, bob, vera, charlie, team, who, status):
    set_quota(team, max_running=4)
    client.force_login({"bob": bob, "vera": vera, "charlie": charlie}[who])
    response = client.post(reverse("team-quota", args=[team.pk]), {"running": 9})
    assert response.status_code == status
    assert TeamQuota.objects.get(team=team).running_limit == 4


# --- Running experiments at once ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_over_the_running_quota_an_experiment_waits_with_the_reason_then_starts(client, alice, team):
    set_quota(team, max_running=1)
    first = queued_experiment(alice, team, name="first")
    second = queued_experiment(alice, team, name="second", dataset=first.dataset)
    assert first.claim(first.job_id)

    assert not second.claim(second.job_id)
    second.refresh_from_db()
    assert second.status == Experiment.Status.QUEUED
    assert second.waiting == "waiting: team Vision runs 1 of 1 allowed"
    assert second.status_event()["waiting"] == second.waiting
    client.force_login(alice)
    page = client.get(second.get_absolute_url()).content.decode()
    assert "waiting: team Vision runs 1 of 1 allowed" in page
    # Recovery does not queue it again while there is no room: no worker spins on it.
    Experiment.objects.filter(pk=second.pk).update(queued=timezone.now() - timedelta(minutes=1))
    assert requeue_lost(Experiment) == []

    # The first finishing makes room: the second is queued again by itself, and starts.
    first.finish(Experiment.Status.DONE)
    second.refresh_from_db()
    assert rq_job_alive(second)
    assert second.claim(second.job_id)
    assert second.waiting == ""
    assert second.status_event()["waiting"] == ""


def train_worker():
    return subprocess.Popen(
        [sys.executable, "manage.py", "rqworker", "--burst", "training"],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def tiny_dataset(owner, team):
    """A real dataset on disk: random 28×28 grey images of two classes."""
    dataset = make_dataset(owner, team=team, width=28, height=28, channels=1)
    folder = dataset.directory
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 256), ("val", 32)):
        np.save(folder / f"{split}_images.npy", rng.integers(0, 255, (n, 28, 28, 1), dtype=np.uint8))
        np.save(folder / f"{split}_labels.npy", (np.arange(n) % 2).astype(np.int32))
    np.save(folder / "mean.npy", np.full((28, 28, 1), 127.5, np.float32))
    return dataset


@pytest.mark.django_db(transaction=True)
def test_two_real_workers_racing_for_the_last_slot_start_exactly_one(alice, team):
    set_quota(team, max_running=1)
    dataset = tiny_dataset(alice, team)
    experiments = [
        queued_experiment(alice, team, dataset, name=f"race {i}", epochs=3, batch_size=32, solver="sgd")
        for i in range(2)
    ]
    workers = [train_worker(), train_worker()]
    try:
        for worker in workers:
            worker.wait(timeout=300)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    errors = b"".join(worker.stderr.read() for worker in workers).decode()[-3000:]
    for experiment in experiments:
        experiment.refresh_from_db()
        assert experiment.status == Experiment.Status.DONE, (experiment.error, errors)
        assert experiment.attempts == 1  # each ran once, to the end
        assert experiment.waiting == ""
    waited = [
        e for e in experiments if e.status_changes.filter(message="Waiting: team Vision runs 1 of 1 allowed").exists()
    ]
    assert len(waited) == 1, errors
    # Never both at once: the one that waited started after the other had finished.
    (later,) = waited
    (earlier,) = [e for e in experiments if e != later]
    first_run, second_run = (DeviceUsage.objects.get(experiment=e) for e in (earlier, later))
    assert first_run.ended <= second_run.started
    assert earlier.finished <= later.started


CLAIM_AT = """
import sys, time
import django
django.setup()
from training.models import Experiment
experiment = Experiment.objects.get(pk=int(sys.argv[1]))
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
print("claimed" if experiment.claim(experiment.job_id) else "refused", flush=True)
"""


@pytest.mark.django_db(transaction=True)
def test_six_processes_claiming_at_the_same_instant_start_exactly_one(alice, team):
    """The claim itself, without RQ between: six processes fire it at the same moment."""
    set_quota(team, max_running=1)
    dataset = make_dataset(alice, team=team)
    experiments = [queued_experiment(alice, team, dataset, name=f"rush {i}") for i in range(6)]
    at = time.time() + 15  # every process has started Django by then
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIM_AT, str(e.pk), str(at)],
            cwd=ROOT,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for e in experiments
    ]
    results = [p.communicate(timeout=120) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err[-2000:] for _, err in results]
    assert sorted(out.strip() for out, _ in results) == ["claimed"] + ["refused"] * 5
    assert Experiment.objects.filter(team=team, status=Experiment.Status.RUNNING).count() == 1
    assert Experiment.objects.filter(team=team, waiting="waiting: team Vision runs 1 of 1 allowed").count() == 5


# --- Device-hours this month --------------------------------------------------------------------


def test_the_month_device_hours_fill_the_quota_and_the_next_experiment_waits(alice, team):
    set_quota(team, max_device_hours=2)
    start = usage.month_start()
    done = make_experiment(alice, team=team)
    # 1.5 h this month, plus 10 h last month that no longer count, plus an attempt that
    # crossed into this month (only its half hour since the 1st counts).
    DeviceUsage.objects.create(
        experiment=done, team=team, started=start, ended=start + timedelta(hours=1.5), open=False
    )
    DeviceUsage.objects.create(
        experiment=done, team=team, started=start - timedelta(hours=12), ended=start - timedelta(hours=2), open=False
    )
    DeviceUsage.objects.create(
        experiment=done, team=team, started=start - timedelta(hours=1), ended=start + timedelta(hours=0.5), open=False
    )
    assert usage.device_hours(team.pk) == pytest.approx(2.0)

    experiment = queued_experiment(alice, team, done.dataset, name="next")
    assert not experiment.claim(experiment.job_id)
    experiment.refresh_from_db()
    assert experiment.waiting == "waiting: team Vision used 2 of 2 device-hours allowed this month"
    assert not experiment.may_start()
    # The organisation raises the limit: it may start.
    set_quota(team, max_device_hours=3)
    assert experiment.may_start()
    assert experiment.claim(experiment.job_id)


def test_a_resumed_attempt_counts_only_its_own_running_time(alice, team):
    experiment = queued_experiment(alice, team, make_dataset(alice, team=team))
    assert experiment.claim(experiment.job_id)
    row = DeviceUsage.objects.get(experiment=experiment)
    # The worker died after 20 minutes of beats; recovery noticed an hour later.
    now = timezone.now()
    DeviceUsage.objects.filter(pk=row.pk).update(started=now - timedelta(minutes=80), ended=now - timedelta(minutes=60))
    # It ran on another host; recovery, here, closes the attempt at its last beat.
    Experiment.objects.filter(pk=experiment.pk).update(worker="elsewhere:4242")
    experiment.refresh_from_db()
    experiment.interrupted("The worker stopped")
    assert experiment.claim(experiment.job_id)
    first, second = DeviceUsage.objects.filter(experiment=experiment).order_by("attempt")
    assert not first.open and second.open
    assert (first.ended - first.started) == timedelta(minutes=20)
    assert second.attempt == 2


# --- Stored bytes -------------------------------------------------------------------------------


def noise_zip(per_class=2, side=160):
    """An archive of class folders of PNG noise (which PNG cannot shrink): about 77 kB an image."""
    buffer = io.BytesIO()
    rng = np.random.default_rng(1)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name in ("cats", "dogs"):
            for i in range(per_class):
                image = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(image, "PNG")
                archive.writestr(f"{name}/{i}.png", image.getvalue())
    return buffer.getvalue()


def archive_form(team, data):
    return {
        "name": "pets", "source_type": "archive", "channels": 3, "width": 32, "height": 32,
        "resize_mode": "squash", "val_percent": 25, "visibility": "team", "team": team.pk,
        "archive": SimpleUploadedFile("pets.zip", data),
    }  # fmt: skip


def test_a_dataset_over_the_storage_quota_is_refused_with_the_figures(client, alice, team):
    set_quota(team, max_stored_bytes=10_000_000)
    make_dataset(alice, team=team, stored_bytes=9_800_000)
    data = noise_zip()
    assert 200_000 < len(data) < 1_000_000
    client.force_login(alice)
    response = client.post(reverse("dataset-new"), archive_form(team, data))
    assert response.status_code == 200
    expected = f"Team Vision stores 9.8 MB of 10 MB allowed; this archive is {usage.size_words(len(data))}."
    assert response.context["form"].errors["archive"] == [expected]
    assert not Experiment.objects.exists() and team.datasets.count() == 1


def test_the_api_refuses_it_too_as_a_field_error(client, alice, team):
    set_quota(team, max_stored_bytes=10_000_000)
    make_dataset(alice, team=team, stored_bytes=9_800_000)
    token = make_token(alice)
    data = noise_zip()
    response = client.post("/api/datasets/", archive_form(team, data), HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 400, response.content
    expected = f"Team Vision stores 9.8 MB of 10 MB allowed; this archive is {usage.size_words(len(data))}."
    assert response.json()["errors"]["archive"] == [expected]


def test_a_team_at_its_storage_limit_takes_no_new_dataset_from_a_folder(alice, team):
    set_quota(team, max_stored_bytes=10_000_000)
    make_dataset(alice, team=team, stored_bytes=10_000_000)
    assert usage.storage_refusal(team) == "team Vision stores 10 MB of 10 MB allowed; free some space first."
    set_quota(team, max_stored_bytes=None)
    assert usage.storage_refusal(team) == ""


def test_snapshots_exports_and_evaluations_count_towards_storage(alice, team):
    from evaluations.models import Evaluation
    from training.models import Export, Snapshot

    experiment = make_experiment(alice, team=team, visibility="team")
    snapshot = Snapshot.objects.create(experiment=experiment, epoch=2, path="/nowhere", size_bytes=1_000)
    Export.objects.create(experiment=experiment, snapshot=snapshot, snapshot_epoch=2, format="onnx", size_bytes=20)
    Evaluation.objects.create(
        owner=alice, team=team, experiment=experiment, snapshot_epoch=2, source="split", size_bytes=300
    )
    Evaluation.objects.create(owner=alice, experiment=experiment, snapshot_epoch=2, source="split", size_bytes=5)
    assert usage.stored_bytes(team.pk) == experiment.dataset.stored_bytes + 1_320


# --- What the pages show ------------------------------------------------------------------------


def test_the_team_page_and_the_console_show_the_usage(client, alice, bob, team):
    set_quota(team, max_running=4, max_stored_bytes=10 * GB)
    make_dataset(alice, team=team, stored_bytes=int(2.5 * GB))
    running = queued_experiment(alice, team, name="running")
    running.claim(running.job_id)
    client.force_login(bob)
    page = client.get(reverse("team-detail", args=[team.pk])).content.decode()
    assert 'id="quota-usage"' in page
    assert '<meter min="0" max="100" value="25" high="90">25%</meter>' in page  # 1 of 4 running
    assert "2.5 GB of 10 GB" in page
    assert "0 of unlimited" in page
    assert 'id="quota-form"' not in page  # a member sees the meters, not the form
    client.force_login(alice)
    assert 'id="quota-form"' in client.get(reverse("team-detail", args=[team.pk])).content.decode()
    console = client.get(reverse("console")).content.decode()
    assert "1 of 4 running experiments" in console
    assert "2.5 GB of 10 GB stored" in console


def test_no_quota_means_no_line_on_the_console_and_unlimited_meters(client, alice, team):
    client.force_login(alice)
    assert 'id="quota-line"' not in client.get(reverse("console")).content.decode()
    page = client.get(reverse("team-detail", args=[team.pk])).content.decode()
    assert page.count("of unlimited") == 3


def test_work_without_a_team_is_never_held(alice):
    experiment = queued_experiment(alice, None)
    assert experiment.claim(experiment.job_id)
    assert experiment.waiting == ""
    assert not DeviceUsage.objects.get(experiment=experiment).team
