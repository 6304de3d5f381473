from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from accounts.login import AdminLoginForm
from accounts.models import ApiToken, AuditEntry, Membership, Team, User

# The admin's login counts refused passwords as the login page does (accounts.ratelimit).
admin.site.login_form = AdminLoginForm


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(User)
class PlatformUserAdmin(UserAdmin):
    list_display = ["username", "email", "first_name", "last_name", "is_staff", "is_active", "last_login"]
    list_filter = ["is_staff", "is_superuser", "is_active", "memberships__team"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "source", "member_count", "created"]
    list_filter = ["source"]
    search_fields = ["name"]
    inlines = [MembershipInline]

    @admin.display(description="members")
    def member_count(self, team):
        return team.memberships.count()


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "role", "source", "created"]
    list_filter = ["role", "source", "team"]
    search_fields = ["user__username", "team__name"]


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only: the log is appended to by the platform and changed by nobody."""

    list_display = ["time", "action", "actor_name", "object_repr", "team_name", "address"]
    list_filter = ["action", "team", "time"]
    search_fields = ["actor_name", "object_repr", "detail"]
    date_hierarchy = "time"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "read_only", "expires", "created", "last_used"]
    list_filter = ["read_only"]
    search_fields = ["name", "user__username", "prefix"]
    readonly_fields = ["prefix", "digest", "created", "last_used"]

    def has_add_permission(self, request):
        return False  # a secret is shown once, to its owner, on the tokens page
