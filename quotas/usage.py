"""What a team uses against its quota: experiments running now, device-hours this calendar
month (from the attempts' DeviceUsage rows) and bytes stored (the sizes recorded on the
rows when their files were written: a dataset's build output, snapshots, exports), and the
words the pages and refusals use for them.

The models of the apps above are looked up by name: those apps import this one.
"""

from dataclasses import dataclass

from django.apps import apps
from django.db.models import Sum
from django.utils import timezone

from jobs.models import JobStatus, this_worker
from quotas.models import DeviceUsage, TeamQuota


def quota_of(team_or_id):
    team_id = getattr(team_or_id, "pk", team_or_id)
    if team_id is None:
        return None
    return TeamQuota.objects.filter(team_id=team_id).select_related("team").first()


def month_start(now=None):
    now = timezone.localtime(now or timezone.now())
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def running_experiments(team_id):
    Experiment = apps.get_model("training", "Experiment")
    return Experiment._base_manager.filter(team_id=team_id, status=JobStatus.RUNNING)


def device_hours(team_id, now=None):
    start = month_start(now)
    rows = DeviceUsage.objects.filter(team_id=team_id, ended__gte=start)
    return sum(row.seconds_since(start) for row in rows) / 3600


def stored_bytes(team_id):
    """What the team's datasets, snapshots, exports and evaluations take on disk, as recorded when each
    was written: no folder is walked."""
    Dataset = apps.get_model("datasets", "Dataset")
    Snapshot = apps.get_model("training", "Snapshot")
    Export = apps.get_model("training", "Export")
    Evaluation = apps.get_model("evaluations", "Evaluation")
    return sum(
        queryset.aggregate(total=Sum(field))["total"] or 0
        for queryset, field in (
            (Dataset.objects.filter(team_id=team_id), "stored_bytes"),
            (Snapshot.objects.filter(experiment__team_id=team_id), "size_bytes"),
            (Export.objects.filter(experiment__team_id=team_id), "size_bytes"),
            (Evaluation.objects.filter(team_id=team_id), "size_bytes"),
        )
    )


def size_words(n):
    """Bytes as people read them in a refusal: 9.8 GB (decimal units, as disks are sold)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


def hours_words(h):
    return f"{h:.1f}".removesuffix(".0")


@dataclass
class Meter:
    """One limit and what is used of it, for a bar."""

    label: str
    used: float
    limit: float | None
    used_text: str
    limit_text: str

    @property
    def percent(self):
        if not self.limit:
            return 100 if self.limit == 0 else 0
        return min(100, round(100 * self.used / self.limit))

    @property
    def full(self):
        return self.limit is not None and self.used >= self.limit


def meters(team):
    quota = quota_of(team)
    limits = (quota.running_limit, quota.hours_limit, quota.bytes_limit) if quota else (None, None, None)
    running, hours, stored = running_experiments(team.pk).count(), device_hours(team.pk), stored_bytes(team.pk)
    return [
        Meter("Running experiments", running, limits[0], str(running), _or_unlimited(limits[0], str)),
        Meter("Device-hours this month", hours, limits[1], hours_words(hours), _or_unlimited(limits[1], hours_words)),
        Meter("Stored", stored, limits[2], size_words(stored), _or_unlimited(limits[2], size_words)),
    ]


def _or_unlimited(limit, words):
    return "unlimited" if limit is None else words(limit)


# --- Recording an experiment's attempts (training.models.Experiment.status_changed) ---------


def attempt_changed(experiment):
    """A claimed attempt opens a row; an attempt that stopped closes it. Closed by the
    process that ran it (the work-horse finishing), it ends now; by anyone else (recovery
    after a crash), at its last heartbeat. Returns whether an attempt stopped."""
    if experiment.status == JobStatus.RUNNING:
        DeviceUsage.objects.create(experiment=experiment, team_id=experiment.team_id, attempt=experiment.attempts)
        return False
    rows = DeviceUsage.objects.filter(experiment=experiment, open=True)
    if experiment.worker == this_worker():
        return rows.update(open=False, ended=timezone.now()) > 0
    return rows.update(open=False) > 0


def beat(experiment_id):
    """The attempt still runs (its heartbeat)."""
    DeviceUsage.objects.filter(experiment_id=experiment_id, open=True).update(ended=timezone.now())


def storage_refusal(team, incoming=0, what="this archive"):
    """Why `team` may not store `incoming` more bytes, with the figures; "" when it may."""
    quota = quota_of(team)
    limit = quota.bytes_limit if quota else None
    if limit is None:
        return ""
    stored = stored_bytes(team.pk)
    if stored + incoming <= limit and (incoming or stored < limit):
        return ""
    words = f"team {team.name} stores {size_words(stored)} of {size_words(limit)} allowed"
    return f"{words}; {what} is {size_words(incoming)}." if incoming else f"{words}; free some space first."
