from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.admin import UserAdmin
from django.template.response import TemplateResponse

from accounts import handover
from accounts.login import AdminLoginForm
from accounts.models import ApiToken, AuditEntry, Membership, Team, User

# The admin's login counts refused passwords as the login page does (accounts.ratelimit).
admin.site.login_form = AdminLoginForm


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


class HandoverForm(forms.Form):
    recipient = forms.ModelChoiceField(
        queryset=User.objects.order_by("-is_active", "username"),
        help_text="An active user; they become the owner. Team and visibility stay as they are.",
    )

    def clean_recipient(self):
        recipient = self.cleaned_data["recipient"]
        if not recipient.is_active:
            raise forms.ValidationError(f"{recipient.username} is inactive: choose an active user.")
        return recipient


@admin.register(User)
class PlatformUserAdmin(UserAdmin):
    list_display = ["username", "email", "first_name", "last_name", "source", "is_staff", "is_active", "last_login"]
    list_filter = ["source", "is_staff", "is_superuser", "is_active", "memberships__team"]
    # Set by the login that made the account; the directory sync looks up the LDAP ones.
    fieldsets = [*UserAdmin.fieldsets, ("Directory", {"fields": ["source"]})]
    readonly_fields = ["source"]
    actions = ["deactivate", "hand_over_work"]

    @admin.action(description="Deactivate, ending their sessions now")
    def deactivate(self, request, queryset):
        ended = 0
        for user in queryset.filter(is_active=True):
            user.is_active = False
            user.save(update_fields=["is_active"])  # accounts.sessions ends the sessions on save
            self.log_change(request, user, "Deactivated.")
            ended += 1
        self.message_user(request, f"{ended} user(s) deactivated; their sessions and sockets are closed.")

    @admin.action(description="Hand over work to…")
    def hand_over_work(self, request, queryset):
        """Everything the chosen users own goes to one recipient, chosen on an intermediate page."""
        form = HandoverForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            recipient = form.cleaned_data["recipient"]
            for leaver in queryset:
                try:
                    moved = handover.hand_over(leaver, recipient, by=request.user)
                except handover.HandoverRefused as refused:
                    self.message_user(request, str(refused), messages.ERROR)
                    continue
                summary = ", ".join(f"{count} {name}" for name, count in moved.items()) or "nothing"
                self.message_user(request, f"{leaver.username}'s work went to {recipient.username}: {summary}.")
            return None
        ctx = {
            **self.admin_site.each_context(request),
            "title": "Hand over work",
            "opts": self.model._meta,
            "form": form,
            "leavers": [(user, handover.owned_by(user)) for user in queryset],
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/accounts/hand_over.html", ctx)


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "source", "member_count", "created"]
    list_filter = ["source"]
    search_fields = ["name"]
    inlines = [MembershipInline]

    @admin.display(description="members")
    def member_count(self, team):
        return team.memberships.count()


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "team", "role", "source", "created"]
    list_filter = ["role", "source", "team"]
    search_fields = ["user__username", "team__name"]


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    """Read-only: the log is appended to by the platform and changed by nobody."""

    list_display = ["time", "action", "actor_name", "object_repr", "team_name", "address"]
    list_filter = ["action", "team", "time"]
    search_fields = ["actor_name", "object_repr", "detail"]
    date_hierarchy = "time"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "read_only", "expires", "created", "last_used"]
    list_filter = ["read_only"]
    search_fields = ["name", "user__username", "prefix"]
    readonly_fields = ["prefix", "digest", "created", "last_used"]

    def has_add_permission(self, request):
        return False  # a secret is shown once, to its owner, on the tokens page
