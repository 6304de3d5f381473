from django.contrib import admin
from django.urls import include, path

from training import views as training_views

urlpatterns = [
    path("", training_views.console, name="console"),
    path("accounts/", include("accounts.urls")),
    path("datasets/", include("datasets.urls")),
    path("experiments/", include("training.urls")),
    path("networks/", include("models.urls")),
    path("api/", include("datasets.api_urls")),
    path("api/", include("training.api_urls")),
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
]
