from django.contrib import admin
from django.contrib.auth.decorators import login_not_required
from django.urls import include, path

from config import api
from training import views as training_views


def api_view(view):
    # The API authenticates by token inside DRF; the login redirect is for pages only.
    return login_not_required(view.as_view())


api_patterns = [
    path("datasets/", api_view(api.DatasetList), name="api-datasets"),
    path("datasets/<int:pk>/", api_view(api.DatasetDetail), name="api-dataset"),
    path("experiments/", api_view(api.ExperimentList), name="api-experiments"),
    path("experiments/<int:pk>/", api_view(api.ExperimentDetail), name="api-experiment"),
    path("experiments/<int:pk>/abort/", api_view(api.ExperimentAbort), name="api-experiment-abort"),
    path("experiments/<int:pk>/resume/", api_view(api.ExperimentResume), name="api-experiment-resume"),
    path("experiments/<int:pk>/classify/", api_view(api.ExperimentClassify), name="api-experiment-classify"),
]

urlpatterns = [
    path("", training_views.console, name="console"),
    path("accounts/", include("accounts.urls")),
    path("datasets/", include("datasets.urls")),
    path("experiments/", include("training.urls")),
    path("networks/", include("models.urls")),
    path("api/", include(api_patterns)),
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
]
