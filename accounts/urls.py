from django.urls import include, path

from accounts import views

urlpatterns = [
    path("token/", views.api_token, name="api-token"),
    path("", include("django.contrib.auth.urls")),
]
