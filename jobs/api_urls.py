from django.contrib.auth.decorators import login_required
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from jobs.api import ApiIndex, api_view

# The docs are a page: an anonymous visitor is sent to log in, as everywhere else. Swagger UI
# only: drf-spectacular's Redoc page loads its fonts from Google.
urlpatterns = [
    path("", api_view(ApiIndex), name="api-index"),
    path("schema/", api_view(SpectacularAPIView), name="api-schema"),
    path("docs/", login_required(SpectacularSwaggerSplitView.as_view(url_name="api-schema")), name="api-docs"),
]
