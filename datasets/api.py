"""The datasets' JSON API: /api/datasets/..., authenticated by a per-user token
("Authorization: Token <key>") or the browser session.

Creation goes through the same form as the page, so a rule is written once; access goes
through accounts.access like everything else.
"""

from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import get_visible_or_404
from datasets.forms import DatasetForm
from datasets.models import Dataset


class DatasetSerializer(serializers.ModelSerializer):
    owner = serializers.StringRelatedField()
    team = serializers.StringRelatedField()

    class Meta:
        model = Dataset
        fields = [
            "id", "name", "owner", "team", "visibility", "source_type", "source_folder", "val_folder", "test_folder",
            "labels_file", "train_list", "val_list", "test_list", "list_prefix", "archive_name", "cloned_from",
            "width", "height", "channels", "resize_mode", "val_percent", "test_percent", "seed", "min_per_class",
            "max_per_class", "shuffle", "encoding", "status", "error", "progress_done", "progress_total", "classes",
            "counts", "skipped", "log", "stored_bytes", "created", "started", "finished",
        ]  # fmt: skip


class DatasetList(APIView):
    def get(self, request):
        datasets = Dataset.objects.visible_to(request.user).select_related("owner", "team")
        return Response(DatasetSerializer(datasets, many=True).data)

    def post(self, request):
        # JSON for a server folder or lists; multipart to upload an archive ("archive") or lists.
        form = DatasetForm(data=request.data, files=request.FILES, user=request.user)
        if not form.is_valid():
            raise ValidationError(form.errors.get_json_data())
        dataset = form.create(request.user)
        return Response(DatasetSerializer(dataset).data, status=status.HTTP_201_CREATED)


class DatasetDetail(APIView):
    def get(self, request, pk):
        dataset = get_visible_or_404(Dataset.objects.select_related("owner", "team"), request.user, pk=pk)
        dataset.check_job()
        return Response(DatasetSerializer(dataset).data)
