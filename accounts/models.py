from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone
from django.utils.functional import cached_property

from accounts.sealed import seal, unseal


class Source(models.TextChoices):
    """Where an account, a team or a membership comes from. The directory's own are kept in
    step with it at every login, and between logins too (LDAP accounts: accounts.ldap_sync;
    OpenID Connect sessions: accounts.oidc_refresh); local ones are the platform's and no
    login touches them."""

    LOCAL = "local", "Local"
    OIDC = "oidc", "OpenID Connect"
    LDAP = "ldap", "LDAP"


class User(AbstractUser):
    # The directory that last logged the account in (set by the LDAP and OpenID Connect
    # backends; local: none did). The LDAP ones are looked up between logins, so a leaver is
    # found without waiting for a login (accounts.ldap_sync).
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.LOCAL)

    def note_source(self, source):
        """Mark the account as the directory's that just logged it in; writes only a change."""
        if self.source != source:
            self.source = source
            self.save(update_fields=["source"])

    def team_ids(self):
        return list(self.memberships.values_list("team_id", flat=True))

    @cached_property
    def is_team_admin(self):
        return self.memberships.filter(role=Membership.Role.ADMIN).exists()


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.LOCAL)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        VIEWER = "viewer", "Viewer"
        MEMBER = "member", "Member"
        ADMIN = "admin", "Admin"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.LOCAL)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="one_membership_per_team")]

    def __str__(self):
        return f"{self.user} in {self.team} ({self.role})"


class Visibility(models.TextChoices):
    PRIVATE = "private", "Private (only me)"
    TEAM = "team", "Team"
    ORGANISATION = "organisation", "Organisation (everyone who can log in)"


class FailedLogin(models.Model):
    """One refused password, kept for the rate limit's window (accounts.ratelimit). In the
    database rather than a cache: every web process sees the same count, and it holds
    while Redis is down."""

    username = models.CharField(max_length=150)
    address = models.GenericIPAddressField(null=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            # The two counts the login form asks for: this account's, this address's, recent.
            models.Index(fields=["username", "created"], name="failedlogin_account"),
            models.Index(fields=["address", "created"], name="failedlogin_address"),
        ]

    def __str__(self):
        return f"{self.username} from {self.address} at {self.created:%Y-%m-%d %H:%M:%S}"


class AuditQuerySet(models.QuerySet):
    # The log is append-only: a bulk change or delete through the ORM is refused as a
    # single row's is (AuditEntry.save, AuditEntry.delete).
    def update(self, **kwargs):
        raise PermissionError("Audit entries cannot be changed.")

    def delete(self):
        raise PermissionError("Audit entries cannot be deleted.")


class AuditEntry(models.Model):
    """One security-relevant action: who, what, on which object, from where, when. Names are
    copied into the row (actor_name, object_repr, team_name), so it still reads the same
    after the user, the object or the team is gone."""

    class Action(models.TextChoices):
        LOGIN = "login", "Logged in"
        LOGIN_FAILED = "login_failed", "Login refused"
        LOGOUT = "logout", "Logged out"
        SHARING = "sharing", "Sharing changed"
        TEAM_CREATED = "team_created", "Team created"
        MEMBER_ADDED = "member_added", "Member added"
        MEMBER_REMOVED = "member_removed", "Member removed"
        ROLE_CHANGED = "role_changed", "Role changed"
        DOWNLOAD = "download", "Downloaded"
        DELETED = "deleted", "Deleted"
        TOKEN_CREATED = "token_created", "API token created"
        TOKEN_REVOKED = "token_revoked", "API token revoked"
        ADMIN = "admin", "Admin action"
        HANDED_OVER = "handed_over", "Work handed over"
        SESSIONS_ENDED = "sessions_ended", "Sessions ended"
        LEFT_DIRECTORY = "left_directory", "Left the directory"
        ENDED_BY_PROVIDER = "ended_by_provider", "Session ended by the provider"

    time = models.DateTimeField(default=timezone.now, db_index=True)
    action = models.CharField(max_length=20, choices=Action.choices)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+")
    actor_name = models.CharField(max_length=150, blank=True)
    content_type = models.ForeignKey(ContentType, models.SET_NULL, null=True, blank=True, related_name="+")
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    team = models.ForeignKey(Team, models.SET_NULL, null=True, blank=True, related_name="audit_entries")
    team_name = models.CharField(max_length=100, blank=True)
    address = models.GenericIPAddressField(null=True, blank=True)
    detail = models.TextField(blank=True)

    objects = AuditQuerySet.as_manager()

    class Meta:
        ordering = ["-time", "-pk"]
        verbose_name_plural = "audit entries"
        indexes = [
            # A team admin's view of the log: their teams' entries, newest first.
            models.Index(fields=["team", "time"], name="audit_team_time"),
            models.Index(fields=["action", "time"], name="audit_action_time"),
        ]

    def __str__(self):
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.actor_name or '—'} {self.get_action_display()} {self.object_repr}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("Audit entries cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("Audit entries cannot be deleted.")


class UserSession(models.Model):
    """One session a user logged in with (accounts.sessions): the session store is keyed by
    session, so this is how a leaver's sessions are found and ended at once."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="logged_in_sessions")
    session_key = models.CharField(max_length=40, unique=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"{self.user} since {self.created:%Y-%m-%d %H:%M:%S}"


class OIDCRefreshToken(models.Model):
    """The OpenID provider's refresh token for one session it logged in: between logins the
    `directory` process trades it for the person's claims now, and a provider that refuses it
    has ended them there, so the session ends here too (accounts.oidc_refresh). Server-side
    and sealed (accounts.sealed), never in the cookie; it goes with its session's row."""

    session = models.OneToOneField(UserSession, models.CASCADE, related_name="oidc_refresh_token")
    # The provider's `sub` the login was for: a userinfo answer about anyone else is refused.
    subject = models.CharField(max_length=255)
    sealed_token = models.TextField()
    created = models.DateTimeField(auto_now_add=True)
    refreshed = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"refresh token of {self.session}"

    @property
    def token(self):
        """The token in clear; accounts.sealed.Unreadable once SECRET_KEY changed without a fallback."""
        return unseal(self.sealed_token)

    @token.setter
    def token(self, value):
        self.sealed_token = seal(value)


class ApiToken(models.Model):
    """A named API token. Only the sha256 of its secret is kept: the secret is shown once,
    when it is made, and `prefix` (its first characters) tells tokens apart afterwards."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12)
    digest = models.CharField(max_length=64, unique=True)
    read_only = models.BooleanField(default=False, help_text="Only reads (GET, HEAD, OPTIONS); no changes.")
    expires = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        verbose_name = "API token"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def expired(self):
        return self.expires is not None and self.expires <= timezone.now()
