from django.urls import path

from jobs.api import api_view
from training import api

urlpatterns = [
    path("experiments/", api_view(api.ExperimentList), name="api-experiments"),
    path("experiments/<int:pk>/", api_view(api.ExperimentDetail), name="api-experiment"),
    path("experiments/<int:pk>/abort/", api_view(api.ExperimentAbort), name="api-experiment-abort"),
    path("experiments/<int:pk>/resume/", api_view(api.ExperimentResume), name="api-experiment-resume"),
    path("experiments/<int:pk>/classify/", api_view(api.ExperimentClassify), name="api-experiment-classify"),
]
