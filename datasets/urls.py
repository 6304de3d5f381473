from django.urls import path

from datasets import views

urlpatterns = [
    path("new/", views.dataset_new, name="dataset-new"),
    path("<int:pk>/", views.dataset_detail, name="dataset-detail"),
    path("<int:pk>/delete/", views.dataset_delete, name="dataset-delete"),
]
