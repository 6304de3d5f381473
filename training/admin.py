from django.contrib import admin

from training.models import EpochMetric, Experiment, Snapshot


class EpochMetricInline(admin.TabularInline):
    model = EpochMetric
    extra = 0
    can_delete = False
    fields = ["epoch", "train_loss", "val_loss", "val_accuracy", "learning_rate", "images_per_second"]
    readonly_fields = fields


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "team", "dataset", "network", "solver", "status", "device", "created"]
    list_filter = ["status", "network", "solver", "visibility", "team"]
    search_fields = ["name", "owner__username", "dataset__name"]
    readonly_fields = ["started", "finished", "device"]
    date_hierarchy = "created"
    inlines = [EpochMetricInline]


@admin.register(EpochMetric)
class EpochMetricAdmin(admin.ModelAdmin):
    list_display = ["experiment", "epoch", "train_loss", "val_loss", "val_accuracy", "learning_rate"]
    list_filter = ["experiment__status"]
    search_fields = ["experiment__name"]


@admin.register(Snapshot)
class SnapshotAdmin(admin.ModelAdmin):
    list_display = ["experiment", "epoch", "path", "created"]
    search_fields = ["experiment__name"]
