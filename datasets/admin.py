from django.contrib import admin

from datasets.models import BuildLogLine, Dataset
from jobs.admin import JobAdmin, JobLogInline


class BuildLogInline(JobLogInline):
    model = BuildLogLine


@admin.register(Dataset)
class DatasetAdmin(JobAdmin):
    list_display = ["name", "owner", "team", "visibility", "status", "channels", "width", "height", "created"]
    list_filter = ["status", "visibility", "channels", "resize_mode", "team"]
    search_fields = ["name", "owner__username", "source_folder"]
    readonly_fields = ["classes", "counts", "skipped", "progress_done", "progress_total"]
    inlines = [BuildLogInline]
