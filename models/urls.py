from django.urls import path

from models import views

urlpatterns = [
    path("", views.network_list, name="network-list"),
    path("spec/", views.network_spec, name="network-spec"),
    path("visualize/", views.network_visualize, name="network-visualize"),
    path("<int:pk>/", views.network_detail, name="network-detail"),
    path("<int:pk>/delete/", views.network_delete, name="network-delete"),
]
