from django.contrib import admin

from evaluations.models import Evaluation, EvaluationLogLine
from jobs.admin import JobAdmin, JobLogInline


class EvaluationLogInline(JobLogInline):
    model = EvaluationLogLine


@admin.register(Evaluation)
class EvaluationAdmin(JobAdmin):
    list_display = ["id", "experiment", "source", "snapshot_epoch", "owner", "visibility", "status", "created"]
    list_select_related = ["experiment", "owner"]
    raw_id_fields = ["experiment", "snapshot", "owner"]
    readonly_fields = ["progress_done", "progress_total", "results", "skipped"]
    inlines = [EvaluationLogInline]
