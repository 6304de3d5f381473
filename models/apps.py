from django.apps import AppConfig


class ModelsConfig(AppConfig):
    """Networks: the Flax code lives in models/networks/ (no Django import there)."""

    name = "models"
    verbose_name = "Networks"
