from django.apps import AppConfig


class JobsConfig(AppConfig):
    """The lifecycle every kind of background work shares: the abstract job row, queueing
    on commit, recovery of lost and stalled jobs, and live events to the pages."""

    name = "jobs"
