from django.contrib import admin

from quotas import admission
from quotas.models import DeviceUsage, TeamQuota


@admin.register(TeamQuota)
class TeamQuotaAdmin(admin.ModelAdmin):
    """The organisation's limits per team (superusers); the team's own narrower ones are
    shown, and set by its admins on the team page."""

    list_display = ["team", "max_running", "max_device_hours", "max_stored_bytes", "updated"]
    fields = ["team", "max_running", "max_device_hours", "max_stored_bytes"]
    readonly_fields = ["team_max_running", "team_max_device_hours", "team_max_stored_bytes"]
    search_fields = ["team__name"]

    def get_fields(self, request, obj=None):
        return self.fields + self.readonly_fields

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # A higher limit may let waiting experiments start.
        admission.wake(obj.team_id)

    def has_module_permission(self, request):
        return request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_add_permission(self, request):
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser


@admin.register(DeviceUsage)
class DeviceUsageAdmin(admin.ModelAdmin):
    list_display = ["experiment", "team", "attempt", "started", "ended", "open"]
    list_filter = ["team", "open"]
    readonly_fields = ["experiment", "team", "attempt", "started", "ended", "open"]
