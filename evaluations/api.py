"""The evaluations' JSON API: /api/experiments/<id>/evaluations/ and /api/evaluations/...,
authenticated by a per-user token or the browser session. Creation goes through the page's
form; access through accounts.access."""

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import get_visible_or_404
from evaluations.forms import EvaluationForm
from evaluations.models import Evaluation
from evaluations.views import results_csv
from training.models import Experiment

SOURCES = ("split", "folder", "list", "archive")
RESULT_FIELDS = ("count", "top1", "top5", "labels", "confusion", "per_class")


class EvaluationSerializer(serializers.ModelSerializer):
    owner = serializers.StringRelatedField()
    team = serializers.StringRelatedField()
    snapshot = serializers.FloatField(source="snapshot_epoch")
    skipped = serializers.SerializerMethodField()

    class Meta:
        model = Evaluation
        fields = [
            "id", "experiment", "snapshot", "owner", "team", "visibility", "source", "split", "upload_name",
            "status", "error", "attempts", "progress_done", "progress_total", "created", "started", "finished",
            "skipped",
        ]  # fmt: skip

    @extend_schema_field(serializers.ListField(child=serializers.DictField(child=serializers.CharField())))
    def get_skipped(self, evaluation):
        return [{"path": path, "reason": reason} for path, reason in evaluation.skipped]

    def to_representation(self, evaluation):
        body = super().to_representation(evaluation)
        results = evaluation.results
        for name in RESULT_FIELDS:
            body[name] = results.get(name, [] if name in ("labels", "confusion", "per_class") else None)
        body["unknown_labels"] = results.get("unknown_labels", {})
        # A server path is named only to those who may read the evaluation (they gave it, or may see it).
        body["path"] = "" if evaluation.upload_name else evaluation.path
        return body


NewEvaluation = inline_serializer(
    "NewEvaluation",
    {
        "snapshot": serializers.FloatField(required=False, help_text="The snapshot's epoch; the newest by default."),
        "split": serializers.ChoiceField(["val", "test"], required=False, help_text="The dataset's own split."),
        "folder": serializers.CharField(required=False, help_text="A server folder with one subfolder per class."),
        "list": serializers.CharField(required=False, help_text="`path [label]` lines: a server path or a file."),
        "archive": serializers.FileField(required=False, help_text="An uploaded .zip or .tar.gz of class folders."),
    },
)


class ExperimentEvaluations(APIView):
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    @extend_schema(summary="The evaluations of an experiment", responses=EvaluationSerializer(many=True))
    def get(self, request, pk):
        experiment = get_visible_or_404(Experiment.objects, request.user, pk=pk)
        evaluations = Evaluation.objects.visible_to(request.user).filter(experiment=experiment)
        return Response(EvaluationSerializer(evaluations.select_related("owner", "team"), many=True).data)

    @extend_schema(
        summary="Evaluate a snapshot over many images (exactly one source)",
        request={"application/json": NewEvaluation, "multipart/form-data": NewEvaluation},
        responses={201: EvaluationSerializer},
    )
    def post(self, request, pk):
        """`snapshot`: an epoch (default: the newest); exactly one of `split` ("val" or
        "test"), `folder` (a server path), `list` (a server path, or an uploaded file) and
        `archive` (an uploaded .zip or .tar.gz)."""
        experiment = get_visible_or_404(Experiment.objects.select_related("dataset"), request.user, pk=pk)
        if not hasattr(request.data, "get"):
            raise ValidationError({"source": ["Send an object with one of: split, folder, list, archive."]})
        given = [name for name in SOURCES if request.data.get(name) not in (None, "") or name in request.FILES]
        if len(given) != 1:
            raise ValidationError({"source": ["Give exactly one of: split, folder, list, archive."]})
        source = given[0]
        data = {"source": source}
        files = {}
        epoch = request.data.get("snapshot")
        if epoch not in (None, ""):
            try:
                epoch = float(epoch)
            except (TypeError, ValueError):
                raise ValidationError({"snapshot": ["Give the snapshot's epoch as a number."]}) from None
            data["snapshot"] = get_object_or_404(experiment.snapshots, epoch=epoch).pk
        if source == "split":
            data["split"] = request.data["split"]
        elif source == "folder":
            data["folder"] = request.data["folder"]
        elif source == "list":
            if "list" in request.FILES:
                files["list_file"] = request.FILES["list"]
            else:
                data["list_path"] = request.data["list"]
        elif "archive" in request.FILES:
            files["archive"] = request.FILES["archive"]
        else:
            raise ValidationError({"archive": ["Upload the archive as a file (multipart)."]})
        if not all(isinstance(value, str | int) for value in data.values()):
            raise ValidationError({source: ["Give it as text."]})
        form = EvaluationForm(data, files, experiment=experiment, user=request.user)
        if not form.is_valid():
            errors = form.errors.get_json_data()
            names = {"list_file": "list", "list_path": "list"}
            raise ValidationError(
                {names.get(name, name): [e["message"] for e in found] for name, found in errors.items()}
            )
        evaluation = form.create()
        return Response(EvaluationSerializer(evaluation).data, status=status.HTTP_201_CREATED)


class EvaluationDetail(APIView):
    @extend_schema(summary="An evaluation: progress, then its metrics", responses=EvaluationSerializer)
    def get(self, request, pk):
        evaluation = get_visible_or_404(Evaluation.objects.select_related("owner", "team"), request.user, pk=pk)
        return Response(EvaluationSerializer(evaluation).data)


class EvaluationResultsCsv(APIView):
    @extend_schema(
        summary="Every evaluated image: path, true label, top 5 with probabilities",
        responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR)},
    )
    def get(self, request, pk):
        evaluation = get_visible_or_404(Evaluation.objects.select_related("experiment"), request.user, pk=pk)
        return results_csv(evaluation)
