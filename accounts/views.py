import csv
from datetime import datetime, time, timedelta

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts import audit, tokens
from accounts.forms import ApiTokenForm, AuditFilterForm
from accounts.models import ApiToken, Team

AUDIT_PAGE_SIZE = 100


def api_token(request):
    if request.method == "POST":
        form = ApiTokenForm(request.POST)
        if form.is_valid():
            days = form.cleaned_data["expires_in"]
            expires = timezone.now() + timedelta(days=int(days)) if days else None
            token, secret = tokens.create(
                request.user,
                form.cleaned_data["name"],
                read_only=form.cleaned_data["read_only"],
                expires=expires,
                request=request,
            )
            # Shown on the next page only: the session forgets it as soon as it is read.
            request.session["new_token"] = {"id": token.pk, "secret": secret}
            return redirect("api-token")
    else:
        form = ApiTokenForm()

    new_token = request.session.pop("new_token", None)
    ctx = {
        "form": form,
        "tokens": request.user.api_tokens.all(),
        "new_token": new_token,
        "teams": request.user.memberships.select_related("team"),
    }
    return render(request, "accounts/api_token.html", ctx)


@require_POST
def api_token_revoke(request, pk):
    # Only one's own: another user's token is not found at all.
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    tokens.revoke(token, user=request.user, request=request)
    messages.success(request, f"Token “{token.name}” was revoked; it no longer works.")
    return redirect("api-token")


def audit_log(request):
    if not audit.may_read_log(request.user):
        raise PermissionDenied("The audit log is for organisation administrators and team admins.")
    entries = audit.readable_by(request.user).select_related("content_type")
    teams = (
        Team.objects.all()
        if request.user.is_superuser
        else Team.objects.filter(pk__in=audit.admin_team_ids(request.user))
    )
    form = AuditFilterForm(request.GET or None, teams=teams)
    if form.is_bound and form.is_valid():
        entries = filtered(entries, form.cleaned_data)
    elif form.is_bound:
        entries = entries.none()
    if request.GET.get("format") == "csv":
        return audit_csv(entries)
    page = Paginator(entries, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    ctx = {"form": form, "page": page, "query": query.urlencode(), "everything": request.user.is_superuser}
    return render(request, "accounts/audit.html", ctx)


def filtered(entries, data):
    if data["action"]:
        entries = entries.filter(action=data["action"])
    if data["user"]:
        entries = entries.filter(actor_name__iexact=data["user"].strip())
    if data["team"]:
        entries = entries.filter(team=data["team"])
    tz = timezone.get_current_timezone()
    if data["since"]:
        entries = entries.filter(time__gte=datetime.combine(data["since"], time.min, tz))
    if data["until"]:
        entries = entries.filter(time__lt=datetime.combine(data["until"] + timedelta(days=1), time.min, tz))
    return entries


CSV_COLUMNS = ["time", "action", "user", "object type", "object id", "object", "team", "address", "detail"]


def _cell(value):
    # A name typed by a user must not become a spreadsheet formula when the file is opened.
    value = str(value)
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


class _Echo:
    def write(self, value):
        return value


def audit_csv(entries):
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(CSV_COLUMNS)
        for entry in entries.iterator(chunk_size=1000):
            yield writer.writerow(
                _cell(value)
                for value in [
                    entry.time.isoformat(),
                    entry.action,
                    entry.actor_name,
                    entry.content_type.model if entry.content_type else "",
                    entry.object_id,
                    entry.object_repr,
                    entry.team_name,
                    entry.address or "",
                    entry.detail,
                ]
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv")
    response["Content-Disposition"] = 'attachment; filename="audit-log.csv"'
    return response
