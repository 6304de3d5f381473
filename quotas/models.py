"""Per-team quotas and the device time experiments spent.

A team's limits are set by the organisation (superusers: the admin or the team page) and
may be narrowed by the team's admins, never raised above the organisation's. Blank means
unlimited. What counts against them is measured in `quotas.usage`; a claim is admitted
against them in `quotas.admission`.
"""

from django.db import models
from django.utils import timezone

# The limits, in the order the pages list them: (field, what it limits, unit).
LIMITS = (
    ("max_running", "running experiments at once"),
    ("max_device_hours", "device-hours a month"),
    ("max_stored_bytes", "stored bytes"),
)


class TeamQuota(models.Model):
    team = models.OneToOneField("accounts.Team", models.CASCADE, related_name="quota")
    # The organisation's limits (superusers). Blank: unlimited.
    max_running = models.PositiveIntegerField(
        null=True, blank=True, verbose_name="running experiments", help_text="At once. Blank: unlimited."
    )
    max_device_hours = models.FloatField(
        null=True, blank=True, verbose_name="device-hours a month", help_text="Per calendar month. Blank: unlimited."
    )
    max_stored_bytes = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        verbose_name="stored bytes",
        help_text="Datasets, snapshots and exports. Blank: unlimited.",
    )
    # The team admins' own, lower limits. Blank: the organisation's.
    team_max_running = models.PositiveIntegerField(null=True, blank=True)
    team_max_device_hours = models.FloatField(null=True, blank=True)
    team_max_stored_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "team quota"

    def __str__(self):
        return f"Quota of {self.team}"

    def limit(self, name):
        """The limit that applies: the lower of the organisation's and the team's own."""
        values = [v for v in (getattr(self, name), getattr(self, f"team_{name}")) if v is not None]
        return min(values) if values else None

    @property
    def running_limit(self):
        return self.limit("max_running")

    @property
    def hours_limit(self):
        return self.limit("max_device_hours")

    @property
    def bytes_limit(self):
        return self.limit("max_stored_bytes")


class DeviceUsage(models.Model):
    """One attempt of an experiment on a worker: from its claim to the last moment it was
    known to run (its heartbeat, then its finish). A resumed experiment has one row per
    attempt, so the time between a crash and the resume is not counted."""

    experiment = models.ForeignKey("training.Experiment", models.SET_NULL, null=True, related_name="device_usage")
    # Kept when the experiment is deleted: the month's hours were spent all the same.
    team = models.ForeignKey("accounts.Team", models.CASCADE, null=True, blank=True, related_name="device_usage")
    attempt = models.PositiveIntegerField(default=1)
    started = models.DateTimeField(default=timezone.now)
    ended = models.DateTimeField(default=timezone.now)
    # Still running (or not yet known to have stopped).
    open = models.BooleanField(default=True)

    class Meta:
        ordering = ["-started"]
        indexes = [
            # A team's hours this month (quotas.usage.device_hours).
            models.Index(fields=["team", "ended"], name="usage_team_ended"),
        ]

    def __str__(self):
        return f"{self.experiment_id} attempt {self.attempt}: {self.started:%Y-%m-%d %H:%M} → {self.ended:%H:%M}"

    def seconds_since(self, start):
        """Running time from `start` on (the month's first moment)."""
        return max(0.0, (self.ended - max(self.started, start)).total_seconds())
