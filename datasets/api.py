"""The datasets' JSON API: /api/datasets/..., authenticated by a per-user token
("Authorization: Token <key>") or the browser session.

Creation goes through the same form as the page, so a rule is written once; access goes
through accounts.access like everything else.
"""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import can_view, get_visible_or_404
from datasets.forms import DatasetForm
from datasets.models import Dataset
from datasets.views import clone_initial
from jobs.api import FilteredList, form_data, form_invalid, form_serializer

NewDataset = form_serializer(DatasetForm, "NewDataset")


class DatasetSerializer(serializers.ModelSerializer):
    """Needs the request in its context: the original of a clone is named (by id) only to
    a user who may see it."""

    owner = serializers.StringRelatedField()
    team = serializers.StringRelatedField()
    cloned_from = serializers.SerializerMethodField()

    class Meta:
        model = Dataset
        fields = [
            "id", "name", "owner", "team", "visibility", "source_type", "source_folder", "val_folder", "test_folder",
            "labels_file", "train_list", "val_list", "test_list", "list_prefix", "archive_name", "cloned_from",
            "width", "height", "channels", "resize_mode", "val_percent", "test_percent", "seed", "min_per_class",
            "max_per_class", "shuffle", "encoding", "status", "error", "progress_done", "progress_total", "classes",
            "counts", "skipped", "stored_bytes", "attempts", "created", "started", "finished",
        ]  # fmt: skip

    def get_cloned_from(self, dataset) -> int | None:
        if dataset.cloned_from_id is None:
            return None
        visible = getattr(dataset, "cloned_from_visible", None)  # annotated by the list
        if visible is None:
            visible = can_view(self.context["request"].user, dataset.cloned_from)
        return dataset.cloned_from_id if visible else None


class DatasetDetailSerializer(DatasetSerializer):
    log = serializers.CharField(source="log_text", read_only=True, help_text="The build log; paged: /log/.")

    class Meta(DatasetSerializer.Meta):
        fields = DatasetSerializer.Meta.fields + ["log"]


class DatasetList(FilteredList):
    model = Dataset
    serializer_class = DatasetSerializer

    def get_queryset(self):
        return (
            Dataset.objects.visible_to(self.request.user)
            .select_related("owner", "team")
            .with_visibility_of(self.request.user, "cloned_from")
        )

    @extend_schema(summary="The datasets this user may see")
    def get(self, request):
        return super().get(request)

    @extend_schema(
        summary="A new dataset",
        request={"application/json": NewDataset, "multipart/form-data": NewDataset},
        responses={201: DatasetSerializer},
    )
    def post(self, request):
        """The new-dataset page's fields; the ones left out take the page's defaults (for a
        clone, `clone_of`: the original's). JSON for a server folder or lists; multipart to
        upload an archive (`archive`) or lists (`labels_upload`, `train_list_upload`, …)."""
        source = _clone_source(request)
        initial = clone_initial(source) if source is not None else None
        data = form_data(DatasetForm, request.data, initial=initial)
        form = DatasetForm(data=data, files=request.FILES, user=request.user)
        if not form.is_valid():
            raise form_invalid(form)
        dataset = form.create(request.user)
        return Response(DatasetSerializer(dataset, context={"request": request}).data, status=status.HTTP_201_CREATED)


def _clone_source(request):
    pk = request.data.get("clone_of") if hasattr(request.data, "get") else None
    if isinstance(pk, str) and pk.isdigit():
        pk = int(pk)
    if not isinstance(pk, int) or isinstance(pk, bool):
        return None  # the form says what is wrong with it
    return Dataset.objects.visible_to(request.user).filter(pk=pk).first()


class DatasetDetail(APIView):
    @extend_schema(summary="A dataset", responses=DatasetDetailSerializer)
    def get(self, request, pk):
        dataset = get_visible_or_404(Dataset.objects.select_related("owner", "team"), request.user, pk=pk)
        return Response(DatasetDetailSerializer(dataset, context={"request": request}).data)
