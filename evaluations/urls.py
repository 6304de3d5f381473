from django.urls import path

from evaluations import views

urlpatterns = [
    path("", views.evaluation_list, name="evaluation-list"),
    path("<int:pk>/", views.evaluation_detail, name="evaluation-detail"),
    path("<int:pk>/images/", views.evaluation_images, name="evaluation-images"),
    path("<int:pk>/images/<int:row>.png", views.evaluation_image, name="evaluation-image"),
    path("<int:pk>/images/<int:row>/inside/", views.evaluation_image_inside, name="evaluation-image-inside"),
    path("<int:pk>/results.csv", views.evaluation_csv, name="evaluation-csv"),
    path("<int:pk>/results.json", views.evaluation_json, name="evaluation-json"),
    path("<int:pk>/delete/", views.evaluation_delete, name="evaluation-delete"),
]
