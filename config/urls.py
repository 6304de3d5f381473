from django.contrib import admin
from django.urls import include, path

from accounts import views as account_views
from evaluations import views as evaluation_views
from training import views as training_views

urlpatterns = [
    path("", training_views.console, name="console"),
    path("accounts/", include("accounts.urls")),
    path("audit/", account_views.audit_log, name="audit-log"),
    path("teams/", include("accounts.team_urls")),
    path("", include("quotas.urls")),
    path("datasets/", include("datasets.urls")),
    path("experiments/", include("training.urls")),
    path("experiments/<int:pk>/evaluate/", evaluation_views.evaluation_new, name="evaluation-new"),
    path("evaluations/", include("evaluations.urls")),
    path("networks/", include("models.urls")),
    path("api/", include("jobs.api_urls")),
    path("api/", include("datasets.api_urls")),
    path("api/", include("training.api_urls")),
    path("api/", include("evaluations.api_urls")),
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
]
