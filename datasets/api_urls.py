from django.urls import path

from datasets import api
from jobs.api import api_view

urlpatterns = [
    path("datasets/", api_view(api.DatasetList), name="api-datasets"),
    path("datasets/<int:pk>/", api_view(api.DatasetDetail), name="api-dataset"),
]
