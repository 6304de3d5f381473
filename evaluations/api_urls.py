from django.urls import path

from evaluations import api
from jobs.api import api_view

urlpatterns = [
    path("experiments/<int:pk>/evaluations/", api_view(api.ExperimentEvaluations), name="api-experiment-evaluations"),
    path("evaluations/<int:pk>/", api_view(api.EvaluationDetail), name="api-evaluation"),
    path("evaluations/<int:pk>/results.csv", api_view(api.EvaluationResultsCsv), name="api-evaluation-csv"),
]
