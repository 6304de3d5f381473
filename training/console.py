"""The console's lists: filtered, searched, sorted and paged, with the choices kept in the
URL. Each list costs the same few queries whatever its length: a count and one page, with
what a row shows joined or annotated in."""

from django import forms
from django.core.paginator import Paginator
from django.db.models import OuterRef, Subquery
from django.http import QueryDict
from django.template.loader import render_to_string

from accounts.models import Team, Visibility
from datasets.grouping import group_by_team
from datasets.models import Dataset
from jobs.models import ACTIVE, JobStatus
from jobs.pagination import page_of
from training.models import EpochMetric, Experiment

PAGE_SIZE = 25
SORTS = {
    "-created": ("Newest first", "-created"),
    "created": ("Oldest first", "created"),
    "name": ("Name A–Z", "name"),
    "-name": ("Name Z–A", "-name"),
    "status": ("Status", "status"),
}


class ConsoleFilter(forms.Form):
    q = forms.CharField(required=False, label="Search", widget=forms.TextInput(attrs={"placeholder": "Name"}))
    status = forms.ChoiceField(required=False, choices=[("", "Any status"), *JobStatus.choices])
    owner = forms.CharField(required=False, widget=forms.TextInput(attrs={"placeholder": "Owner"}))
    team = forms.ModelChoiceField(required=False, queryset=Team.objects.none(), empty_label="Any team")
    network = forms.CharField(required=False, widget=forms.TextInput(attrs={"placeholder": "Network"}))
    dataset = forms.IntegerField(required=False, widget=forms.HiddenInput)
    sort = forms.ChoiceField(required=False, choices=[(key, label) for key, (label, _) in SORTS.items()])

    def __init__(self, data, user):
        super().__init__(data)
        self.fields["team"].queryset = (
            Team.objects.all() if user.is_superuser else Team.objects.filter(memberships__user=user)
        )
        self.user = user

    @property
    def values(self):
        return self.cleaned_data if self.is_valid() else {}

    def narrow(self, rows, *, networks=True):
        """Rows matching the filters; a filter that did not validate is left out."""
        values = self.values
        if values.get("q"):
            rows = rows.filter(name__icontains=values["q"])
        if values.get("status"):
            rows = rows.filter(status=values["status"])
        if values.get("owner"):
            rows = rows.filter(owner__username__iexact=values["owner"])
        if values.get("team"):
            rows = rows.filter(team=values["team"], visibility__in=[Visibility.TEAM, Visibility.ORGANISATION])
        if networks and values.get("network"):
            # "ResNet-20" or "resnet": the stored name is the registry's.
            wanted = values["network"].lower().split("-")[0].replace(" ", "")
            rows = rows.filter(network__iexact=wanted)
        if networks and values.get("dataset"):
            rows = rows.filter(dataset_id=values["dataset"])
        return rows.order_by(SORTS[values.get("sort") or "-created"][1], "-pk")

    def query_without(self, *names):
        """The URL query of the current filters, less `names` (for page links)."""
        params = self.data.copy()
        for name in names:
            params.pop(name, None)
        return params.urlencode()


def experiment_rows(user, console_filter):
    latest = EpochMetric.objects.filter(experiment=OuterRef("pk"), train_loss__isnull=False).order_by("-epoch")
    rows = (
        Experiment.objects.visible_to(user)
        .select_related("dataset", "owner", "team", "sweep")
        .with_visibility_of(user, "dataset", "sweep")
        .annotate(
            latest_epoch=Subquery(latest.values("epoch")[:1]),
            latest_accuracy=Subquery(latest.values("val_accuracy")[:1]),
        )
    )
    return console_filter.narrow(rows)


def console_lists(request):
    """The console's three lists, each a page."""
    console_filter = ConsoleFilter(request.GET, request.user)
    experiments = experiment_rows(request.user, console_filter)
    datasets = console_filter.narrow(
        Dataset.objects.visible_to(request.user).select_related("owner", "team"), networks=False
    )
    return {
        "filter": console_filter,
        "filtered": any(console_filter.values.get(name) for name in ("q", "status", "owner", "team", "network")),
        "datasets": page(datasets, request, "dp"),
        "active": page(experiments.filter(status__in=ACTIVE), request, "ap"),
        "finished": page(experiments.exclude(status__in=ACTIVE), request, "fp"),
        "query_dp": console_filter.query_without("dp"),
        "query_ap": console_filter.query_without("ap"),
        "query_fp": console_filter.query_without("fp"),
    }


def page(rows, request, name):
    """A page of `rows`: a count, then the page's rows, found among the bare rows so that
    only those get what a row shows annotated (jobs.pagination.page_of)."""
    result = Paginator(rows.values("pk"), PAGE_SIZE).get_page(request.GET.get(name))
    start = (result.number - 1) * PAGE_SIZE
    result.object_list = page_of(rows, start, start + PAGE_SIZE)
    result.param = name
    return result


# --- The live console (training.consumers.ConsoleConsumer) ----------------------------------


def live_row(user, query, kind, pk):
    """What a console whose URL query is `query` shows of row `pk` of `kind` ("experiment"
    or "dataset") to `user`, as an event: the row rendered as the page renders it, which of
    the page's lists it belongs to, and whether it matches the page's filters. None when
    the user may not see it (or it is gone)."""
    console_filter = ConsoleFilter(QueryDict(query or ""), user)
    if kind == "experiment":
        rows = experiment_rows(user, ConsoleFilter(QueryDict(""), user))
        template, name = "training/_experiment_row.html", "experiment"
    elif kind == "dataset":
        rows = Dataset.objects.visible_to(user).select_related("owner", "team")
        template, name = "training/_dataset_row.html", "dataset"
    else:
        return None
    obj = rows.filter(pk=pk).first()
    if obj is None:
        return None
    matches = console_filter.narrow(rows.filter(pk=pk), networks=kind == "experiment").exists()
    if kind == "dataset":
        listed, section = "datasets", group_by_team([obj])[0][0]
    else:
        listed, section = ("active" if obj.status in ACTIVE else "finished"), ""
    return {
        "type": "row",
        "kind": kind,
        "id": pk,
        "list": listed,
        "section": section,  # the datasets' group of rows: "Private", a team's name, "Organisation"
        "matches": matches,
        "created": obj.created.isoformat(),
        "html": render_to_string(template, {name: obj}),
    }


def visible_ids(user, kind, ids):
    """Which of `ids` (rows of `kind` a console shows) `user` may still see."""
    model = {"experiment": Experiment, "dataset": Dataset}.get(kind)
    if model is None or not ids:
        return set()
    return set(model.objects.visible_to(user).filter(pk__in=ids).values_list("pk", flat=True))
