from django.urls import path

from training import views

urlpatterns = [
    path("", views.experiment_list, name="experiment-list"),
    path("new/", views.experiment_new, name="experiment-new"),
    path("<int:pk>/", views.experiment_detail, name="experiment-detail"),
    path("<int:pk>/classify/", views.experiment_classify, name="experiment-classify"),
    path("<int:pk>/abort/", views.experiment_abort, name="experiment-abort"),
    path("<int:pk>/delete/", views.experiment_delete, name="experiment-delete"),
    path("<int:pk>/resume/", views.experiment_resume, name="experiment-resume"),
    path("<int:pk>/settings/", views.experiment_settings, name="experiment-settings"),
    path("<int:pk>/hardware/", views.experiment_hardware, name="experiment-hardware"),
    path("<int:pk>/steps.json", views.experiment_steps, name="experiment-steps"),
    path("<int:pk>/metrics.csv", views.experiment_metrics_csv, name="experiment-metrics-csv"),
    path("<int:pk>/snapshots/<int:snapshot_pk>/download/", views.snapshot_download, name="snapshot-download"),
    path("<int:pk>/snapshots/<int:snapshot_pk>/exports/", views.snapshot_exports, name="snapshot-exports"),
    path("<int:pk>/exports/<int:export_pk>/download/", views.export_download, name="export-download"),
    path("compare/", views.experiment_compare, name="experiment-compare"),
    path("lr-preview/", views.lr_preview, name="lr-preview"),
    path("sweeps/<int:pk>/", views.sweep_detail, name="sweep-detail"),
]
