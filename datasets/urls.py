from django.urls import path

from datasets import views

urlpatterns = [
    path("", views.dataset_list, name="dataset-list"),
    path("new/", views.dataset_new, name="dataset-new"),
    path("preview/", views.dataset_preview, name="dataset-preview"),
    path("<int:pk>/", views.dataset_detail, name="dataset-detail"),
    path("<int:pk>/explore/", views.dataset_explore, name="dataset-explore"),
    path("<int:pk>/images/<str:split>/<int:index>.png", views.dataset_image, name="dataset-image"),
    path("<int:pk>/mean.png", views.dataset_mean, name="dataset-mean"),
    path("<int:pk>/clone/", views.dataset_clone, name="dataset-clone"),
    path("<int:pk>/settings/", views.dataset_settings, name="dataset-settings"),
    path("<int:pk>/delete/", views.dataset_delete, name="dataset-delete"),
]
