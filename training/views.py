import math
import shutil
from types import SimpleNamespace

from django import forms
from django.contrib import messages
from django.db.models import OuterRef, Subquery
from django.http import FileResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.text import slugify
from django.views.decorators.http import require_POST

from accounts.access import can_edit, get_editable_or_404, get_visible_or_404
from datasets import imaging
from datasets.models import Dataset
from models.models import SavedNetwork
from models.networks import STANDARD_NETWORKS
from training import exports, inference, schedules, workers
from training.forms import POLICY_FIELDS, ClassifyForm, ExperimentForm, initial_from, parse_values
from training.models import EpochMetric, Experiment, Sweep


def console(request):
    latest = EpochMetric.objects.filter(experiment=OuterRef("pk")).order_by("-epoch")
    experiments = (
        Experiment.objects.visible_to(request.user)
        .select_related("dataset", "owner", "team")
        .annotate(
            latest_epoch=Subquery(latest.values("epoch")[:1]),
            latest_accuracy=Subquery(latest.values("val_accuracy")[:1]),
        )
    )
    ctx = {
        "datasets": Dataset.objects.visible_to(request.user).select_related("owner", "team"),
        "active": [e for e in experiments if e.is_active],
        "finished": [e for e in experiments if not e.is_active],
        "devices": device_rows(request.user),
    }
    return render(request, "training/console.html", ctx)


def device_rows(user):
    """What runs and waits on each GPU, naming only the experiments this user may see."""
    board = workers.device_board()
    ids = {row["current"] for row in board if row["current"]} | {i for row in board for i in row["waiting"]}
    visible = Experiment.objects.visible_to(user).in_bulk(ids)
    for row in board:
        row["current"] = visible.get(row["current"])
        waiting = row["waiting"]
        row["waiting"] = [visible[i] for i in waiting if i in visible]
        row["waiting_hidden"] = len(waiting) - len(row["waiting"])
    return board


def experiment_new(request):
    if request.method == "POST":
        form = ExperimentForm(request.POST, user=request.user)
        if form.is_valid():
            sweep, experiments = form.create()
            return redirect(sweep or experiments[0])
    else:
        initial = {}
        clone_id, dataset_id = request.GET.get("clone", ""), request.GET.get("dataset", "")
        if clone_id.isdigit():
            initial = initial_from(get_visible_or_404(Experiment.objects, request.user, pk=clone_id))
        elif dataset_id.isdigit():
            dataset = Dataset.objects.visible_to(request.user).filter(pk=dataset_id).first()
            if dataset is not None:
                initial = {"dataset": dataset.pk, "name": f"{dataset.name} LeNet"}
        form = ExperimentForm(user=request.user, initial=initial)

    ctx = {
        "form": form,
        "networks": STANDARD_NETWORKS,
        "saved_networks": SavedNetwork.objects.visible_to(request.user).select_related("owner"),
        "previous": Experiment.objects.visible_to(request.user).only("pk", "name")[:50],
    }
    return render(request, "training/new.html", ctx)


def experiment_detail(request, pk, classify_form=None, classification=None):
    experiment = get_visible_or_404(
        Experiment.objects.select_related("dataset", "owner", "team", "sweep", "pretrained__experiment"),
        request.user,
        pk=pk,
    )
    snapshots = experiment.snapshots.all()
    ctx = {
        "experiment": experiment,
        "can_edit": can_edit(request.user, experiment),
        "metrics": [row.as_event() for row in experiment.metrics.all()],
        "snapshots": snapshots,
        "status_changes": experiment.status_changes.all(),
        "log_lines": experiment.log_lines.all(),
        "hardware": experiment.hardware,
        "classify_form": classify_form or ClassifyForm(snapshots=snapshots),
        "classification": classification,
    }
    return render(request, "training/detail.html", ctx)


@require_POST
def experiment_classify(request, pk):
    experiment = get_visible_or_404(Experiment.objects.select_related("dataset"), request.user, pk=pk)
    form = ClassifyForm(request.POST, request.FILES, snapshots=experiment.snapshots.all())
    classification = None
    if form.is_valid():
        try:
            classification = inference.classify(form.cleaned_data["snapshot"], form.cleaned_data["image"])
        except imaging.ImagingError as exc:
            form.add_error("image", str(exc))
    return experiment_detail(request, pk, classify_form=form, classification=classification)


@require_POST
def experiment_abort(request, pk):
    experiment = get_editable_or_404(Experiment.objects, request.user, pk=pk)
    if experiment.is_active:
        experiment.request_abort()
        messages.info(request, "Abort requested: training stops after the current step.")
    return redirect(experiment)


def experiment_hardware(request, pk):
    """The hardware panel alone, refreshed by the page when the job sends a new sample."""
    experiment = get_visible_or_404(Experiment.objects, request.user, pk=pk)
    return render(request, "training/_hardware.html", {"hardware": experiment.hardware})


@require_POST
def experiment_resume(request, pk):
    experiment = get_editable_or_404(Experiment.objects, request.user, pk=pk)
    if experiment.resume():
        messages.info(request, "Queued to resume from the last snapshot.")
    else:
        messages.error(request, "Only an aborted or failed experiment with a snapshot can be resumed.")
    return redirect(experiment)


def snapshot_download(request, pk, snapshot_pk):
    experiment = get_visible_or_404(Experiment.objects.select_related("dataset"), request.user, pk=pk)
    snapshot = get_object_or_404(experiment.snapshots, pk=snapshot_pk)
    archive = exports.snapshot_archive(snapshot)
    filename = f"{slugify(experiment.name) or 'experiment'}-epoch-{snapshot.epoch_label}.zip"
    return FileResponse(archive, as_attachment=True, filename=filename, content_type="application/zip")


def sweep_detail(request, pk):
    sweep = get_visible_or_404(Sweep.objects, request.user, pk=pk)
    experiments = sweep.experiments.visible_to(request.user).select_related("dataset").prefetch_related("metrics")
    rows = []
    for experiment in experiments:
        metrics = list(experiment.metrics.all())
        last = next((m for m in reversed(metrics) if m.train_loss is not None), None)
        accuracies = [m.val_accuracy for m in metrics if m.val_accuracy is not None]
        rows.append(
            {
                "experiment": experiment,
                "last": last,
                "best_accuracy": max(accuracies) if accuracies else None,
                "curve": [m.as_event() for m in metrics],
            }
        )
    ctx = {"sweep": sweep, "rows": rows, "curves": [{"name": r["experiment"].name, "points": r["curve"]} for r in rows]}
    return render(request, "training/sweep.html", ctx)


@require_POST
def experiment_delete(request, pk):
    experiment = get_editable_or_404(Experiment.objects, request.user, pk=pk)
    if experiment.status == Experiment.Status.RUNNING:
        messages.error(request, "This experiment is running; abort it first.")
        return redirect(experiment)
    directory = experiment.directory
    experiment.request_abort()  # a queued job finds nothing to claim
    experiment.delete()
    shutil.rmtree(directory, ignore_errors=True)
    messages.success(request, f"Experiment “{experiment.name}” was deleted.")
    return redirect("console")


def lr_preview(request):
    """The learning rate over the run for the form's current values, for its live chart.
    The same formula the engine trains with (training/schedules.py), without JAX."""
    params = request.GET
    try:
        rate = parse_values(params.get("learning_rates", "0.01"), float, "learning rate")[0]
        batch_size = parse_values(params.get("batch_sizes", "64"), int, "batch size")[0]
        epochs = int(params.get("epochs", 30))
        accumulation = int(params.get("batch_accumulation", 1) or 1)
        policy = schedules.LRPolicy(
            policy=params.get("lr_policy", "fixed"),
            **{name: _number(params, name) for name in POLICY_FIELDS if name in params and name != "multistep_values"},
            multistep_values=params.get("multistep_values", "50,85"),
        )
        policy.validate()
        if not (math.isfinite(rate) and rate > 0 and epochs >= 1 and batch_size >= 1 and accumulation >= 1):
            raise ValueError("Give a learning rate above 0, and at least one epoch and image per batch.")
    except (ValueError, forms.ValidationError) as exc:
        message = exc.messages[0] if isinstance(exc, forms.ValidationError) else str(exc)
        return JsonResponse({"error": message}, status=400)

    images = 1000
    dataset_id = params.get("dataset", "")
    if dataset_id.isdigit():
        dataset = Dataset.objects.visible_to(request.user).filter(pk=dataset_id).first()
        if dataset is not None and dataset.train_count:
            images = dataset.train_count
    steps = schedules.steps_per_epoch(images, batch_size)
    config = SimpleNamespace(learning_rate=rate, epochs=epochs, lr_policy=policy, batch_accumulation=accumulation)
    points = schedules.learning_rate_curve(config, steps, points=min(201, 10 * epochs + 1))
    return JsonResponse({"points": points})


def _number(params, name):
    try:
        return float(params[name])
    except ValueError:
        raise ValueError(f"{name.replace('_', ' ').capitalize()} must be a number.") from None
