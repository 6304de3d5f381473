"""What the admin shows of every kind of job: the lifecycle's columns, read-only (they
change by the job's own state changes, never by hand), and its log."""

from django.contrib import admin

JOB_FIELDS = ["status", "error", "job_id", "attempts", "worker", "queued", "started", "finished", "heartbeat"]


class JobLogInline(admin.TabularInline):
    extra = 0
    can_delete = False
    fields = ["created", "level", "message"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


class JobAdmin(admin.ModelAdmin):
    list_filter = ["status"]
    date_hierarchy = "created"

    def get_readonly_fields(self, request, obj=None):
        return [*JOB_FIELDS, *super().get_readonly_fields(request, obj)]
