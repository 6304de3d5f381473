from django.urls import path

from training import views

urlpatterns = [
    path("new/", views.experiment_new, name="experiment-new"),
    path("<int:pk>/", views.experiment_detail, name="experiment-detail"),
    path("<int:pk>/classify/", views.experiment_classify, name="experiment-classify"),
    path("<int:pk>/abort/", views.experiment_abort, name="experiment-abort"),
    path("<int:pk>/delete/", views.experiment_delete, name="experiment-delete"),
]
