"""The experiments' JSON API: /api/experiments/..., authenticated by a per-user token
("Authorization: Token <key>") or the browser session.

Creation goes through the same form as the page, so a rule is written once; access goes
through accounts.access like everything else.
"""

from collections.abc import Mapping

from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ParseError, PermissionDenied, ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.access import can_edit, can_view, get_visible_or_404, work_problem
from accounts.forms import SETTINGS_FIELDS
from accounts.models import Visibility
from datasets import imaging
from jobs.api import Conflict, FilteredList, form_data, form_invalid, form_serializer
from jobs.schema import ErrorSerializer
from training import inference, recipes
from training.config import network_choices
from training.forms import ClassifyForm, ExperimentForm, ExperimentSettingsForm, ExportForm
from training.models import EpochMetric, Experiment, Export
from training.views import export_file, snapshot_file

# The API names a field after one value, as the model does; a list of them is a sweep.
NAMES = {"learning_rate": "learning_rates", "batch_size": "batch_sizes"}
LISTS = ("learning_rate", "batch_size")
NewExperiment = form_serializer(ExperimentForm, "NewExperiment", names=NAMES, lists=LISTS)


class MetricSerializer(serializers.ModelSerializer):
    class Meta:
        model = EpochMetric
        fields = ["epoch", "train_loss", "val_loss", "val_accuracy", "learning_rate", "images_per_second", "seconds"]


class ExperimentSerializer(serializers.ModelSerializer):
    """Needs the request in its context: the dataset and the sweep are named (by id) only to
    a user who may see them."""

    owner = serializers.StringRelatedField()
    team = serializers.StringRelatedField()
    dataset = serializers.SerializerMethodField()
    sweep = serializers.SerializerMethodField()
    snapshots = serializers.SerializerMethodField()

    class Meta:
        model = Experiment
        fields = [
            "id", "name", "owner", "team", "visibility", "dataset", "sweep", "network", "network_spec", "epochs",
            "batch_size", "learning_rate", "solver", "seed", "options", "keep_snapshots", "queue", "status", "error",
            "device", "attempts", "progress", "created", "started", "finished", "snapshots",
        ]  # fmt: skip

    def get_snapshots(self, experiment) -> list[float]:
        return [snapshot.epoch for snapshot in experiment.snapshots.all()]

    def get_dataset(self, experiment) -> int | None:
        return self._if_visible(experiment, "dataset")

    def get_sweep(self, experiment) -> int | None:
        return self._if_visible(experiment, "sweep")

    def _if_visible(self, experiment, relation):
        if getattr(experiment, f"{relation}_id") is None:
            return None
        visible = getattr(experiment, f"{relation}_visible", None)  # annotated by the list
        if visible is None:
            visible = can_view(self.context["request"].user, getattr(experiment, relation))
        return getattr(experiment, f"{relation}_id") if visible else None


class ExperimentDetailSerializer(ExperimentSerializer):
    metrics = MetricSerializer(many=True, read_only=True)

    class Meta(ExperimentSerializer.Meta):
        fields = ExperimentSerializer.Meta.fields + ["metrics"]


class SweepCreated(serializers.Serializer):
    sweep = serializers.IntegerField()
    experiments = ExperimentSerializer(many=True)


class ExperimentChange(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    team = serializers.IntegerField(allow_null=True, required=False, help_text="One of your teams' id; null for none.")
    visibility = serializers.ChoiceField(choices=Visibility.choices, required=False)


class ExperimentList(FilteredList):
    model = Experiment
    serializer_class = ExperimentSerializer
    filter_fields = ("status", "owner", "team", "dataset", "network")
    filter_choices = {"network": network_choices}

    def get_queryset(self):
        return (
            Experiment.objects.visible_to(self.request.user)
            .select_related("owner", "team")
            .with_visibility_of(self.request.user, "dataset", "sweep")
            .prefetch_related("snapshots")
        )

    @extend_schema(summary="The experiments this user may see")
    def get(self, request):
        return super().get(request)

    @extend_schema(
        summary="A new experiment, or a sweep",
        request=NewExperiment,
        responses={
            201: PolymorphicProxySerializer(
                component_name="ExperimentCreated",
                serializers=[ExperimentSerializer, SweepCreated],
                resource_type_field_name=None,
            )
        },
    )
    def post(self, request):
        """The new-experiment page's fields; the ones left out take the page's defaults.
        `learning_rate` and `batch_size` take a number or a list: several values create a
        sweep, one experiment per combination, answered as `{"sweep", "experiments"}`. The
        solver, rate and schedule left out are the recipe of the network and epochs given,
        as the page fills them in."""
        body = request.data if isinstance(request.data, Mapping) else {}
        initial = recipes.form_initial(body.get("network"), body.get("epochs"))
        data = form_data(ExperimentForm, request.data, names=NAMES, lists=LISTS, initial=initial)
        form = ExperimentForm(data=data, user=request.user)
        if not form.is_valid():
            raise form_invalid(form, names=NAMES)
        sweep, experiments = form.create()
        context = {"request": request}
        if sweep is None:
            return Response(ExperimentSerializer(experiments[0], context=context).data, status=status.HTTP_201_CREATED)
        body = {"sweep": sweep.pk, "experiments": ExperimentSerializer(experiments, many=True, context=context).data}
        return Response(body, status=status.HTTP_201_CREATED)


class ExperimentDetail(APIView):
    @extend_schema(summary="An experiment, with its metrics per epoch", responses=ExperimentDetailSerializer)
    def get(self, request, pk):
        experiment = get_visible_or_404(Experiment.objects.select_related("owner", "team"), request.user, pk=pk)
        return Response(ExperimentDetailSerializer(experiment, context={"request": request}).data)

    @extend_schema(
        summary="Rename or share an experiment", request=ExperimentChange, responses=ExperimentDetailSerializer
    )
    def patch(self, request, pk):
        """Name, team and visibility, under the same rule as the settings page."""
        experiment = get_visible_or_404(Experiment.objects.select_related("dataset"), request.user, pk=pk)
        if not can_edit(request.user, experiment):
            raise PermissionDenied("You may view this experiment but not change it.")
        if not isinstance(request.data, Mapping):
            raise ParseError("Send an object of the fields to change.")
        unknown = sorted(set(request.data) - set(SETTINGS_FIELDS))
        if unknown:
            raise ValidationError({name: ["Only name, team and visibility can be changed."] for name in unknown})
        data = {"name": experiment.name, "visibility": experiment.visibility, "team": experiment.team_id or ""}
        for name, value in request.data.items():
            if isinstance(value, Mapping | list):
                raise ValidationError({name: ["Give one value."]})
            data[name] = "" if value is None else value
        form = ExperimentSettingsForm(data=data, instance=experiment, user=request.user)
        if not form.is_valid():
            raise form_invalid(form)
        form.save()
        return Response(ExperimentDetailSerializer(experiment, context={"request": request}).data)


class ExperimentAbort(APIView):
    @extend_schema(
        summary="Abort an experiment",
        request=None,
        responses={200: ExperimentSerializer, 409: ErrorSerializer},
    )
    def post(self, request, pk):
        """A queued experiment is aborted at once; a running one stops after its current
        step and keeps a final snapshot. One that has ended answers 409."""
        experiment = get_visible_or_404(Experiment.objects, request.user, pk=pk)
        if not can_edit(request.user, experiment):
            raise PermissionDenied("You may view this experiment but not abort it.")
        if not experiment.is_active:
            raise Conflict(f"This experiment is not running: it is {experiment.get_status_display().lower()}.")
        experiment.request_abort()
        return Response(ExperimentSerializer(experiment, context={"request": request}).data)


class ExperimentResume(APIView):
    @extend_schema(
        summary="Resume an aborted or failed experiment",
        request=None,
        responses={200: ExperimentSerializer, 409: ErrorSerializer},
    )
    def post(self, request, pk):
        """From its last snapshot. One that is not aborted or failed, or has no snapshot, answers 409."""
        experiment = get_visible_or_404(Experiment.objects, request.user, pk=pk)
        if not can_edit(request.user, experiment):
            raise PermissionDenied("You may view this experiment but not resume it.")
        problem = work_problem(request.user, experiment.team_id)
        if problem:
            raise PermissionDenied(problem)
        if not experiment.resume():
            raise Conflict("Only an aborted or failed experiment with a snapshot can be resumed.")
        return Response(ExperimentSerializer(experiment, context={"request": request}).data)


class Classify(serializers.Serializer):
    image = serializers.FileField(required=False, help_text="The image to classify (multipart); or give `url`.")
    url = serializers.URLField(required=False, help_text="An image on the web to fetch and classify.")
    snapshot = serializers.FloatField(required=False, help_text="The snapshot's epoch; the newest by default.")
    layers = serializers.BooleanField(required=False, default=False, help_text="Every layer's output and statistics.")
    tiles = serializers.BooleanField(required=False, default=False, help_text="With the layers: PNG tiles of them.")
    saliency = serializers.BooleanField(required=False, default=False, help_text="Saliency of the top class.")
    saliency_class = serializers.CharField(required=False, help_text="Saliency also for this class (label or index).")


ClassifyResponse = inline_serializer(
    "Classification",
    {
        "snapshot": serializers.FloatField(),
        "predictions": inline_serializer(
            "Prediction", {"label": serializers.CharField(), "probability": serializers.FloatField()}, many=True
        ),
        "total_params": serializers.IntegerField(required=False),
        "layers": serializers.ListField(child=serializers.DictField(), required=False),
        "saliency": serializers.ListField(child=serializers.DictField(), required=False),
    },
)


class ExperimentClassify(APIView):
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    @extend_schema(
        summary="Classify an image with a snapshot",
        request={"multipart/form-data": Classify, "application/json": Classify},
        responses=ClassifyResponse,
    )
    def post(self, request, pk):
        experiment = get_visible_or_404(Experiment.objects.select_related("dataset"), request.user, pk=pk)
        if not isinstance(request.data, dict):
            raise ValidationError({"image": ["Send an object: multipart with the file 'image', or JSON with 'url'."]})
        epoch = request.data.get("snapshot")
        snapshots = experiment.snapshots.all()
        if epoch not in (None, ""):
            try:
                epoch = float(epoch)
            except (TypeError, ValueError):
                raise ValidationError({"snapshot": ["Give the snapshot's epoch as a number."]}) from None
            snapshot = get_object_or_404(snapshots, epoch=epoch)
        else:
            snapshot = snapshots.first()  # newest first
        if snapshot is None:
            raise ValidationError({"snapshot": ["This experiment has no snapshot yet."]})
        fields = ("url", "layers", "tiles", "saliency", "saliency_class")
        data = {name: request.data[name] for name in fields if request.data.get(name) is not None}
        form = ClassifyForm(
            {**data, "snapshot": snapshot.pk},
            {"image": request.FILES["image"]} if "image" in request.FILES else {},
            snapshots=snapshots,
            classes=experiment.dataset.classes,
        )
        if not form.is_valid():
            raise form_invalid(form)
        options = form.cleaned_data
        try:
            classification = inference.classify(
                snapshot,
                options["image"],
                layers=options["layers"],
                tiles=options["tiles"],
                saliency=options["saliency"],
                saliency_class=options["saliency_class"],
            )
        except imaging.ImagingError as exc:
            raise ValidationError({form.image_field: [str(exc)]}) from None
        body = {
            "snapshot": snapshot.epoch,
            "predictions": [{"label": p.label, "probability": p.probability} for p in classification.predictions],
        }
        if options["layers"]:
            body["total_params"] = classification.total_params
            body["layers"] = [layer.as_dict(tiles=options["tiles"]) for layer in classification.layers]
        if classification.saliency:
            body["saliency"] = [entry.as_dict() for entry in classification.saliency]
        return Response(body)


class SnapshotDownload(APIView):
    @extend_schema(
        summary="The zip of a snapshot",
        responses={(200, "application/zip"): OpenApiTypes.BINARY, 404: ErrorSerializer},
    )
    def get(self, request, pk, epoch):
        """The weights and optimizer state, with the labels, mean image and preprocessing
        (those three only for a user who may see the dataset), as the page's download."""
        experiment = get_visible_or_404(Experiment.objects.select_related("dataset"), request.user, pk=pk)
        try:
            epoch = float(epoch)
        except ValueError:
            raise NotFound("Give the snapshot's epoch as a number.") from None
        snapshot = get_object_or_404(experiment.snapshots, epoch=epoch)
        return snapshot_file(request.user, experiment, snapshot)


# --- Exports ----------------------------------------------------------------------------------

NewExport = form_serializer(ExportForm, "NewExport")


class ExportSerializer(serializers.ModelSerializer):
    snapshot = serializers.FloatField(source="snapshot_epoch", help_text="The snapshot's epoch.")
    download = serializers.SerializerMethodField()
    requested_by = serializers.StringRelatedField(help_text="The username of who asked for it.")

    class Meta:
        model = Export
        fields = [
            "id", "experiment", "snapshot", "format", "status", "error", "attempts", "size_bytes", "requested_by",
            "created", "started", "finished", "download",
        ]  # fmt: skip

    def get_download(self, export) -> str | None:
        """The zip's URL once it is done, for a user who may download it."""
        request = self.context["request"]
        if export.status != Export.Status.DONE or Export.refusal(request.user, export.experiment) is not None:
            return None
        return request.build_absolute_uri(reverse("api-export-download", args=[export.pk]))


class SnapshotExports(APIView):
    @extend_schema(
        summary="Export a snapshot as ONNX or StableHLO",
        request=NewExport,
        responses={200: ExportSerializer, 201: ExportSerializer, 403: ErrorSerializer},
    )
    def post(self, request, pk, epoch):
        """A job on a training worker; follow it at `GET /api/exports/<id>/`. An export of the
        same snapshot and format that is under way or done is answered instead (200)."""
        experiment = get_visible_or_404(Experiment.objects.select_related("dataset"), request.user, pk=pk)
        try:
            epoch = float(epoch)
        except ValueError:
            raise NotFound("Give the snapshot's epoch as a number.") from None
        snapshot = get_object_or_404(experiment.snapshots, epoch=epoch)
        refusal = Export.refusal(request.user, experiment)
        if refusal is not None:
            raise PermissionDenied(refusal)
        form = ExportForm(data=form_data(ExportForm, request.data))
        if not form.is_valid():
            raise form_invalid(form)
        export, created = Export.request(snapshot, form.cleaned_data["format"], request.user)
        body = ExportSerializer(export, context={"request": request}).data
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class ExportDetail(APIView):
    @extend_schema(summary="An export: its status, the reason it failed, its download", responses=ExportSerializer)
    def get(self, request, pk):
        export = get_visible_or_404(
            Export.objects.select_related("experiment__dataset", "requested_by"), request.user, pk=pk
        )
        return Response(ExportSerializer(export, context={"request": request}).data)


class ExportDownload(APIView):
    @extend_schema(
        summary="The zip of a finished export",
        responses={(200, "application/zip"): OpenApiTypes.BINARY, 403: ErrorSerializer, 404: ErrorSerializer},
    )
    def get(self, request, pk):
        """The model file, labels.txt, preprocessing.json, info.json, classify.py and README.md."""
        export = get_visible_or_404(Export.objects.select_related("experiment__dataset"), request.user, pk=pk)
        return export_file(request.user, export)
