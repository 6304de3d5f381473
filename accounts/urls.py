from django.urls import include, path

from accounts import login, oidc, views

urlpatterns = [
    path("token/", views.api_token, name="api-token"),
    path("token/<int:pk>/revoke/", views.api_token_revoke, name="api-token-revoke"),
    path("login/", login.LoginView.as_view(), name="login"),
    path("oidc/start/", oidc.LoginStart.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", oidc.LoginCallback.as_view(), name="oidc_authentication_callback"),
    path("logout/", oidc.Logout.as_view(), name="logout"),
    path("", include("django.contrib.auth.urls")),
]
