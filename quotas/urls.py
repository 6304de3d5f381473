from django.urls import path

from quotas import views

urlpatterns = [
    path("teams/<int:pk>/quota/", views.quota_edit, name="team-quota"),
]
