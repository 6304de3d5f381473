from django.urls import path

from datasets.consumers import DatasetConsumer
from evaluations.consumers import EvaluationConsumer
from training.consumers import ConsoleConsumer, ExperimentConsumer, SweepConsumer

websocket_urlpatterns = [
    path("ws/datasets/<int:pk>/", DatasetConsumer.as_asgi()),
    path("ws/experiments/<int:pk>/", ExperimentConsumer.as_asgi()),
    path("ws/evaluations/<int:pk>/", EvaluationConsumer.as_asgi()),
    path("ws/console/", ConsoleConsumer.as_asgi()),
    path("ws/sweeps/<int:pk>/", SweepConsumer.as_asgi()),
]
