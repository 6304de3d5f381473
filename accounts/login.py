"""The login page: the organisation's button when OpenID Connect is configured, and the
password form, which says plainly when the rate limit or LOCAL_LOGIN refuses it."""

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm

from accounts import ldap, oidc, ratelimit


def passwords_for_everyone():
    """False when a password logs in only superusers (LOCAL_LOGIN=0 and no LDAP)."""
    return settings.LOCAL_LOGIN or ldap.configured()


class RateLimitedLogin:
    def clean(self):
        reason = ratelimit.blocked(self.request, self.cleaned_data.get("username"))
        if reason:
            raise forms.ValidationError(reason, code="too_many_attempts")
        try:
            return super().clean()
        except forms.ValidationError:
            reason = ratelimit.blocked(self.request, self.cleaned_data.get("username"))
            if reason:
                raise forms.ValidationError(reason, code="too_many_attempts") from None
            if not passwords_for_everyone():
                raise forms.ValidationError(
                    f"Log in with {settings.OIDC_NAME}: passwords here are only for administrators.",
                    code="local_login_off",
                ) from None
            raise

    def _post_clean(self):
        super()._post_clean()
        if self.non_field_errors():
            for name in ("username", "password"):
                self.fields[name].widget.attrs["aria-describedby"] = "login-error"


class LoginForm(RateLimitedLogin, AuthenticationForm):
    pass


class AdminLoginForm(RateLimitedLogin, AdminAuthenticationForm):
    pass


class LoginView(auth_views.LoginView):
    form_class = LoginForm

    def get_context_data(self, **kwargs):
        ctx = super().get_context_data(**kwargs)
        ctx["oidc_name"] = settings.OIDC_NAME if oidc.configured() else None
        ctx["passwords_for_everyone"] = passwords_for_everyone()
        return ctx
