from django.urls import path

from datasets import api
from datasets.models import Dataset
from jobs.api import JobLog, api_view

urlpatterns = [
    path("datasets/", api_view(api.DatasetList), name="api-datasets"),
    path("datasets/<int:pk>/", api_view(api.DatasetDetail), name="api-dataset"),
    path("datasets/<int:pk>/log/", api_view(JobLog.of(Dataset)), name="api-dataset-log"),
]
