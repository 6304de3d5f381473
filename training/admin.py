from django.contrib import admin

from jobs.admin import JobAdmin, JobLogInline
from training.models import EpochMetric, Experiment, Export, ExportLogLine, LogLine, Snapshot


class EpochMetricInline(admin.TabularInline):
    model = EpochMetric
    extra = 0
    can_delete = False
    fields = ["epoch", "train_loss", "val_loss", "val_accuracy", "learning_rate", "images_per_second"]
    readonly_fields = fields


class LogLineInline(JobLogInline):
    model = LogLine


@admin.register(Experiment)
class ExperimentAdmin(JobAdmin):
    list_display = ["name", "owner", "team", "dataset", "network", "solver", "status", "device", "created"]
    list_filter = ["status", "network", "solver", "visibility", "team"]
    search_fields = ["name", "owner__username", "dataset__name"]
    readonly_fields = ["device", "progress", "hardware"]
    inlines = [EpochMetricInline, LogLineInline]


@admin.register(EpochMetric)
class EpochMetricAdmin(admin.ModelAdmin):
    list_display = ["experiment", "epoch", "train_loss", "val_loss", "val_accuracy", "learning_rate"]
    list_filter = ["experiment__status"]
    search_fields = ["experiment__name"]


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
    list_display = ["experiment", "epoch", "path", "created"]
    search_fields = ["experiment__name"]


class ExportLogInline(JobLogInline):
    model = ExportLogLine


@admin.register(Export)
class ExportAdmin(JobAdmin):
    list_display = ["id", "experiment", "snapshot_epoch", "format", "status", "size_bytes", "requested_by", "created"]
    list_filter = ["status", "format"]
    list_select_related = ["experiment", "requested_by"]
    search_fields = ["experiment__name", "requested_by__username"]
    raw_id_fields = ["experiment", "snapshot", "requested_by"]
    readonly_fields = ["path", "size_bytes"]
    inlines = [ExportLogInline]
