from django.contrib import admin

from datasets.models import Dataset


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "team", "visibility", "status", "channels", "width", "height", "created"]
    list_filter = ["status", "visibility", "channels", "resize_mode", "team"]
    search_fields = ["name", "owner__username", "source_folder"]
    readonly_fields = ["classes", "counts", "skipped", "started", "finished", "progress_done", "progress_total"]
    date_hierarchy = "created"
