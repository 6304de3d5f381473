from django.urls import path

from jobs.api import JobLog, api_view
from training import api
from training.models import Experiment, Export

urlpatterns = [
    path("experiments/", api_view(api.ExperimentList), name="api-experiments"),
    path("experiments/<int:pk>/", api_view(api.ExperimentDetail), name="api-experiment"),
    path("experiments/<int:pk>/log/", api_view(JobLog.of(Experiment)), name="api-experiment-log"),
    path("experiments/<int:pk>/abort/", api_view(api.ExperimentAbort), name="api-experiment-abort"),
    path("experiments/<int:pk>/resume/", api_view(api.ExperimentResume), name="api-experiment-resume"),
    path("experiments/<int:pk>/classify/", api_view(api.ExperimentClassify), name="api-experiment-classify"),
    path(
        "experiments/<int:pk>/snapshots/<str:epoch>/download/",
        api_view(api.SnapshotDownload),
        name="api-snapshot-download",
    ),
    path(
        "experiments/<int:pk>/snapshots/<str:epoch>/exports/",
        api_view(api.SnapshotExports),
        name="api-snapshot-exports",
    ),
    path("exports/<int:pk>/", api_view(api.ExportDetail), name="api-export"),
    path("exports/<int:pk>/log/", api_view(JobLog.of(Export)), name="api-export-log"),
    path("exports/<int:pk>/download/", api_view(api.ExportDownload), name="api-export-download"),
]
