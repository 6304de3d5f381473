from django.apps import AppConfig


class JobsConfig(AppConfig):
    """The lifecycle every kind of background work shares: the abstract job row, queueing
    on commit, recovery of lost and stalled jobs, and live events to the pages."""

    name = "jobs"

    def ready(self):
        # Whatever decides who sees what bumps the access generation (jobs.events), so open
        # sockets check again before their next event.
        from django.apps import apps
        from django.contrib.auth.signals import user_logged_out
        from django.db.models.signals import post_delete, post_save

        from accounts.access import Owned
        from accounts.access import access_changed as access_change_signal
        from accounts.models import ApiToken, Membership, Team, User, UserSession
        from jobs.events import access_changed

        watched = [Membership, Team, User, UserSession, ApiToken]
        watched += [model for model in apps.get_models() if issubclass(model, Owned)]
        for model in watched:
            post_save.connect(access_changed, sender=model, dispatch_uid=f"access-{model._meta.label}-save")
            post_delete.connect(access_changed, sender=model, dispatch_uid=f"access-{model._meta.label}-delete")
        user_logged_out.connect(access_changed, dispatch_uid="access-logout")
        access_change_signal.connect(access_changed, dispatch_uid="access-changed")
