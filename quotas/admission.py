"""Whether a team's queued experiment may start now, decided where it starts: in the
worker's claim (jobs.models.Job.claim), so that two workers racing for a team's last slot
start exactly one.

The claim is one conditional UPDATE: "queued → running where the team runs fewer than N".
SQLite takes its write lock when that statement begins, so the count and the change are
one step there. PostgreSQL evaluates the count from the statement's snapshot, which a
concurrent claim does not see yet, so there the claim first locks the team's quota row
(SELECT ... FOR UPDATE): the second claim waits for the first to commit, and its UPDATE
then counts the first one's running row.

The month's device-hours are checked under the same lock; a running experiment is never
stopped for them, only the next one waits.
"""

from django.apps import apps
from django.db import connection, models, transaction
from django.db.models.functions import Coalesce
from django.db.models.lookups import LessThan

from jobs.models import JobStatus
from jobs.recovery import rq_job_alive
from quotas import usage
from quotas.models import TeamQuota


class Admission:
    """The claim's context: `condition` narrows the UPDATE, `refusal()` says why it waits."""

    def __init__(self, job):
        self.job = job
        self.quota = None
        self._atomic = None

    def __enter__(self):
        if self.job.team_id is None:
            return self
        rows = TeamQuota.objects.filter(team_id=self.job.team_id).select_related("team")
        if connection.features.has_select_for_update:
            self._atomic = transaction.atomic()
            self._atomic.__enter__()
            rows = rows.select_for_update(of=("self",))
        # On SQLite the quota is read outside any transaction: a read before the UPDATE in
        # one transaction would hold a shared lock that a competing writer's commit waits
        # for, and SQLite answers such a deadlock with "database is locked".
        self.quota = rows.first()
        return self

    def __exit__(self, *exc):
        if self._atomic is not None:
            return self._atomic.__exit__(*exc)
        return False

    @property
    def condition(self):
        """What the claimed row must meet: its team runs fewer experiments than it may."""
        limit = self.quota.running_limit if self.quota else None
        if limit is None:
            return models.Q()
        Experiment = apps.get_model("training", "Experiment")
        running = (
            Experiment._base_manager.filter(team_id=self.job.team_id, status=JobStatus.RUNNING)
            .order_by()
            .values("team_id")
            .annotate(n=models.Count("pk"))
            .values("n")
        )
        return LessThan(Coalesce(models.Subquery(running), 0), limit)

    def refusal(self):
        """Why the team's quota holds the job back now, in words; "" when it does not."""
        return refusal(self.quota, self.job.team_id)


def refusal(quota, team_id):
    if quota is None:
        return ""
    name = quota.team.name
    limit = quota.running_limit
    if limit is not None:
        running = usage.running_experiments(team_id).count()
        if running >= limit:
            return f"waiting: team {name} runs {running} of {limit} allowed"
    limit = quota.hours_limit
    if limit is not None:
        hours = usage.device_hours(team_id)
        if hours >= limit:
            return (
                f"waiting: team {name} used {usage.hours_words(hours)} of {usage.hours_words(limit)} "
                "device-hours allowed this month"
            )
    return ""


def has_room(job):
    """Whether the job's team could start it now (no lock: a hint for waking it)."""
    return not refusal(usage.quota_of(job.team_id), job.team_id)


def wake(team_id):
    """One of the team's experiments stopped: queue its waiting ones again, oldest first,
    as many as may start now. Each claims as usual, so one woken in vain waits again."""
    quota = usage.quota_of(team_id)
    if refusal(quota, team_id):
        return []
    Experiment = apps.get_model("training", "Experiment")
    waiting = list(
        Experiment._base_manager.filter(team_id=team_id, status=JobStatus.QUEUED)
        .exclude(waiting="")
        .order_by("created", "pk")
    )
    limit = quota.running_limit if quota else None
    if limit is not None:
        waiting = waiting[: max(0, limit - usage.running_experiments(team_id).count())]
    woken = []
    for job in waiting:
        if not rq_job_alive(job):
            job.enqueue()
            woken.append(job.pk)
    return woken
