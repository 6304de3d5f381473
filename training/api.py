"""The experiments' JSON API: /api/experiments/..., authenticated by a per-user token
("Authorization: Token <key>") or the browser session.

Creation goes through the same form as the page, so a rule is written once; access goes
through accounts.access like everything else.
"""

from django.shortcuts import get_object_or_404
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import can_edit, get_visible_or_404
from datasets import imaging
from training import inference
from training.forms import ExperimentForm, data_with_defaults
from training.models import EpochMetric, Experiment


class MetricSerializer(serializers.ModelSerializer):
    class Meta:
        model = EpochMetric
        fields = ["epoch", "train_loss", "val_loss", "val_accuracy", "learning_rate", "images_per_second", "seconds"]


class ExperimentSerializer(serializers.ModelSerializer):
    owner = serializers.StringRelatedField()
    team = serializers.StringRelatedField()
    snapshots = serializers.SerializerMethodField()

    class Meta:
        model = Experiment
        fields = [
            "id", "name", "owner", "team", "visibility", "dataset", "sweep", "network", "network_spec", "epochs",
            "batch_size", "learning_rate", "solver", "seed", "options", "keep_snapshots", "queue", "status", "error",
            "device", "attempts", "progress", "created", "started", "finished", "snapshots",
        ]  # fmt: skip

    def get_snapshots(self, experiment):
        return [snapshot.epoch for snapshot in experiment.snapshots.all()]


class ExperimentDetailSerializer(ExperimentSerializer):
    metrics = MetricSerializer(many=True, read_only=True)

    class Meta(ExperimentSerializer.Meta):
        fields = ExperimentSerializer.Meta.fields + ["metrics"]


class ExperimentList(APIView):
    def get(self, request):
        experiments = (
            Experiment.objects.visible_to(request.user).select_related("owner", "team").prefetch_related("snapshots")
        )
        return Response(ExperimentSerializer(experiments, many=True).data)

    def post(self, request):
        """Fields as on the page; left-out ones take the page's defaults. Lists of
        learning rates and/or batch sizes create a sweep."""
        form = ExperimentForm(data=data_with_defaults(request.data), user=request.user)
        if not form.is_valid():
            raise ValidationError(form.errors.get_json_data())
        sweep, experiments = form.create()
        if sweep is None:
            return Response(ExperimentSerializer(experiments[0]).data, status=status.HTTP_201_CREATED)
        body = {"sweep": sweep.pk, "experiments": ExperimentSerializer(experiments, many=True).data}
        return Response(body, status=status.HTTP_201_CREATED)


class ExperimentDetail(APIView):
    def get(self, request, pk):
        experiment = get_visible_or_404(Experiment.objects.select_related("owner", "team"), request.user, pk=pk)
        return Response(ExperimentDetailSerializer(experiment).data)


class ExperimentAbort(APIView):
    def post(self, request, pk):
        experiment = get_visible_or_404(Experiment.objects, request.user, pk=pk)
        if not can_edit(request.user, experiment):
            raise PermissionDenied("You may view this experiment but not abort it.")
        experiment.request_abort()
        return Response(ExperimentSerializer(experiment).data)


class ExperimentResume(APIView):
    def post(self, request, pk):
        experiment = get_visible_or_404(Experiment.objects, request.user, pk=pk)
        if not can_edit(request.user, experiment):
            raise PermissionDenied("You may view this experiment but not resume it.")
        if not experiment.resume():
            raise ValidationError({"status": "Only an aborted or failed experiment with a snapshot can be resumed."})
        return Response(ExperimentSerializer(experiment).data)


class ExperimentClassify(APIView):
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    def post(self, request, pk):
        experiment = get_visible_or_404(Experiment.objects.select_related("dataset"), request.user, pk=pk)
        image = request.FILES.get("image")
        if image is None:
            raise ValidationError({"image": "Attach the image to classify as the multipart field 'image'."})
        epoch = request.data.get("snapshot")
        snapshots = experiment.snapshots.all()
        if epoch not in (None, ""):
            snapshot = get_object_or_404(snapshots, epoch=epoch)
        else:
            snapshot = snapshots.first()  # newest first
        if snapshot is None:
            raise ValidationError({"snapshot": "This experiment has no snapshot yet."})
        try:
            predictions = inference.classify(snapshot, image).predictions
        except imaging.ImagingError as exc:
            raise ValidationError({"image": str(exc)}) from None
        return Response(
            {
                "snapshot": snapshot.epoch,
                "predictions": [{"label": p.label, "probability": p.probability} for p in predictions],
            }
        )
