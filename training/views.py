import csv
import math
import shutil

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_POST
from redis.exceptions import RedisError

from accounts import audit
from accounts.access import can_edit, can_view, get_editable_or_404, get_visible_or_404, work_problem
from datasets import imaging
from datasets.models import Dataset
from models.forms import SavedNetworkForm
from models.models import SavedNetwork
from training import compare, exports, inference, recipes, schedules, series, workers
from training import config as training_config
from training.config import EXPORT_FORMATS, TrainConfig, export_problem
from training.console import console_lists
from training.forms import (
    MAX_SWEEP,
    POLICY_FIELDS,
    ClassifyForm,
    ExperimentForm,
    ExperimentSettingsForm,
    ExportForm,
    initial_from,
    parse_values,
    sharing_of,
)
from training.models import Experiment, Export, Snapshot, Sweep


def console(request):
    ctx = {**console_lists(request), "devices": device_rows(request.user)}
    ctx["queues_paused"] = ctx["devices"] is None
    return render(request, "training/console.html", ctx)


def experiment_list(request):
    """/experiments/: the console lists them (its filters apply), so send people there."""
    query = request.GET.urlencode()
    return redirect(f"{reverse('console')}{'?' + query if query else ''}#console-filter")


def device_rows(user):
    """What runs and waits on each GPU, naming only the experiments this user may see;
    None while Redis, which knows, does not answer."""
    try:
        board = workers.device_board()
    except RedisError:
        return None
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
        "networks": training_config.standard_networks(),
        "saved_networks": SavedNetwork.objects.visible_to(request.user).select_related("owner"),
        "previous": Experiment.objects.visible_to(request.user).only("pk", "name")[:50],
        "sharing": sharing_of(form.datasets, form.fields["pretrained"].queryset),
        "save_form": SavedNetworkForm(user=request.user, auto_id="save_%s"),
        "max_sweep": MAX_SWEEP,
    }
    return render(request, "training/new.html", ctx)


def experiment_detail(request, pk, classify_form=None, classification=None):
    experiment = get_visible_or_404(
        Experiment.objects.select_related(
            "dataset", "owner", "team", "sweep", "pretrained__experiment"
        ).with_visibility_of(request.user, "dataset", "sweep", "pretrained__experiment"),
        request.user,
        pk=pk,
    )
    snapshots = experiment.snapshots.all()
    export_refusal = Export.refusal(request.user, experiment)
    ctx = {
        "experiment": experiment,
        "can_edit": can_edit(request.user, experiment),
        "export_refusal": export_refusal,
        # A viewer of the team downloads its exports but may not queue new ones.
        "export_work_problem": work_problem(request.user, experiment.team_id),
        "snapshot_rows": [
            {"snapshot": snapshot, "exports": exports}
            for snapshot, exports in zip(snapshots, export_cells(experiment, snapshots), strict=True)
        ]
        if export_refusal is None
        else [{"snapshot": snapshot} for snapshot in snapshots],
        "metrics": compare.curve(experiment, list(experiment.metrics.all())),
        "step_chart": step_chart(experiment),
        "snapshots": snapshots,
        "status_changes": experiment.status_changes.all(),
        "log_lines": experiment.log_lines.all(),
        "hardware": experiment.hardware,
        "classify_form": classify_form or ClassifyForm(snapshots=snapshots, classes=experiment.dataset.classes),
        "classification": classification,
    }
    return render(request, "training/detail.html", ctx)


def step_chart(experiment, start_step=None, end_step=None):
    """What the charts draw at iteration resolution: the training loss and accuracy (cut
    down to series.CHART_POINTS each, between two steps when zoomed) and the learning
    rate where it changes, with the batches per epoch that turn steps into epochs."""
    steps = schedules.steps_per_epoch(experiment.dataset.train_count or 1, experiment.batch_size)
    records = series.read(experiment.directory / series.FILE_NAME)
    started = _origin(experiment, records)
    chart = {"steps_per_epoch": steps, **series.chart_series(records, started, start_step, end_step)}
    if start_step is None and end_step is None:
        try:
            rates = series.learning_rate_points(training_config.from_experiment(experiment), steps)
        except ValueError:
            rates = []  # options that no longer validate: the run never trained with them
        chart["learning_rate"] = {"step": [step for step, _ in rates], "value": [rate for _, rate in rates]}
    return chart


def _origin(experiment, records):
    """Seconds on the wall axis count from the run's first start."""
    if experiment.started is not None:
        return experiment.started.timestamp()
    return float(records["time"][0]) if len(records) else 0.0


def experiment_steps(request, pk):
    """The iteration-resolution series between two steps, for a zoomed chart."""
    experiment = get_visible_or_404(Experiment.objects.select_related("dataset"), request.user, pk=pk)
    try:
        start, end = (int(request.GET[name]) if request.GET.get(name) else None for name in ("start", "end"))
        if any(step is not None and not 0 <= step < 2**62 for step in (start, end)):
            raise ValueError
    except ValueError:
        return JsonResponse({"error": "start and end are step numbers (whole numbers from 0)."}, status=400)
    return JsonResponse(step_chart(experiment, start, end))


class _Echo:
    def write(self, value):
        return value


def experiment_metrics_csv(request, pk):
    """Every point of the run: the training curve step by step, then each validation."""
    experiment = get_visible_or_404(Experiment.objects.select_related("dataset"), request.user, pk=pk)
    steps = schedules.steps_per_epoch(experiment.dataset.train_count or 1, experiment.batch_size)
    records = series.read(experiment.directory / series.FILE_NAME)
    started = _origin(experiment, records)
    metrics = compare.curve(experiment, list(experiment.metrics.all()))

    def rows():
        yield [
            "kind",
            "step",
            "epoch",
            "seconds",
            "train_loss",
            "train_accuracy",
            "val_loss",
            "val_accuracy",
            "learning_rate",
        ]
        # In slices: a million points never sit in memory as Python objects at once.
        for lo in range(0, len(records), 10_000):
            chunk = records[lo : lo + 10_000]
            for step, taken, loss, accuracy in zip(
                chunk["step"].tolist(),
                chunk["time"].tolist(),
                chunk["loss"].tolist(),
                chunk["accuracy"].tolist(),
                strict=True,
            ):
                yield [
                    "train",
                    step,
                    f"{step / steps:.4f}",
                    f"{taken - started:.2f}",
                    f"{loss:.6g}",
                    f"{accuracy:.6g}",
                    "",
                    "",
                    "",
                ]
        for row in metrics:
            yield [
                "epoch" if row["train_loss"] is not None else "validation",
                round(row["epoch"] * steps), row["epoch"], f"{row['wall']:.2f}",
                "" if row["train_loss"] is None else f"{row['train_loss']:.6g}", "",
                "" if row["val_loss"] is None else f"{row['val_loss']:.6g}",
                "" if row["val_accuracy"] is None else f"{row['val_accuracy']:.6g}",
                "" if row["learning_rate"] is None else f"{row['learning_rate']:.6g}",
            ]  # fmt: skip

    writer = csv.writer(_Echo())
    response = StreamingHttpResponse((writer.writerow(row) for row in rows()), content_type="text/csv")
    filename = f"{slugify(experiment.name) or 'experiment'}-metrics.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@require_POST
def experiment_classify(request, pk):
    experiment = get_visible_or_404(Experiment.objects.select_related("dataset"), request.user, pk=pk)
    form = ClassifyForm(
        request.POST, request.FILES, snapshots=experiment.snapshots.all(), classes=experiment.dataset.classes
    )
    classification = None
    if form.is_valid():
        data = form.cleaned_data
        try:
            classification = inference.classify(
                data["snapshot"],
                data["image"],
                layers=data["layers"],
                tiles=True,
                saliency=data["saliency"],
                saliency_class=data["saliency_class"],
            )
        except imaging.ImagingError as exc:
            form.add_error(form.image_field, str(exc))
    return experiment_detail(request, pk, classify_form=form, classification=classification)


def experiment_settings(request, pk):
    experiment = get_editable_or_404(Experiment.objects.select_related("dataset", "team"), request.user, pk=pk)
    if request.method == "POST":
        form = ExperimentSettingsForm(request.POST, instance=experiment, user=request.user)
        if form.is_valid():
            form.save()
            messages.success(request, "Saved.")
            return redirect(experiment)
    else:
        form = ExperimentSettingsForm(instance=experiment, user=request.user)

    ctx = {"experiment": experiment, "form": form, "dataset_visible": can_view(request.user, experiment.dataset)}
    return render(request, "training/settings.html", ctx)


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
    return render(request, "training/_hardware.html", {"hardware": experiment.hardware, "experiment": experiment})


@require_POST
def experiment_resume(request, pk):
    experiment = get_editable_or_404(Experiment.objects, request.user, pk=pk)
    problem = work_problem(request.user, experiment.team_id)
    if problem:
        raise PermissionDenied(problem)
    if experiment.resume():
        messages.info(request, "Queued to resume from the last snapshot.")
    else:
        messages.error(request, "Only an aborted or failed experiment with a snapshot can be resumed.")
    return redirect(experiment)


def snapshot_download(request, pk, snapshot_pk):
    experiment = get_visible_or_404(Experiment.objects.select_related("dataset"), request.user, pk=pk)
    snapshot = get_object_or_404(experiment.snapshots, pk=snapshot_pk)
    return snapshot_file(request.user, experiment, snapshot)


def snapshot_file(user, experiment, snapshot):
    """The zip of a snapshot, for the page and the API alike."""
    archive = exports.snapshot_archive(snapshot, with_dataset=can_view(user, experiment.dataset))
    audit.record(audit.Action.DOWNLOAD, user=user, obj=experiment, detail=f"snapshot of epoch {snapshot.epoch_label}")
    filename = f"{slugify(experiment.name) or 'experiment'}-epoch-{snapshot.epoch_label}.zip"
    return FileResponse(archive, as_attachment=True, filename=filename, content_type="application/zip")


def export_cells(experiment, snapshots):
    """Per snapshot, per format: its latest export (or None) and, where the format cannot
    hold the network, why."""
    latest = {}
    for export in experiment.exports.filter(snapshot__in=snapshots).select_related("requested_by"):
        latest.setdefault((export.snapshot_id, export.format), export)
    return [
        [
            {
                "format": fmt,
                "label": label,
                "export": latest.get((snapshot.pk, fmt)),
                "problem": export_problem(experiment.network, fmt),
            }
            for fmt, label in EXPORT_FORMATS.items()
        ]
        for snapshot in snapshots
    ]


def snapshot_exports(request, pk, snapshot_pk):
    """POST: export the snapshot in the format given. GET: its exports' cell of the snapshot
    table, which the experiment page fetches again when one of them changes."""
    experiment = get_visible_or_404(Experiment.objects.select_related("dataset"), request.user, pk=pk)
    snapshot = get_object_or_404(Snapshot.objects.filter(experiment=experiment), pk=snapshot_pk)
    refusal = Export.refusal(request.user, experiment)
    if refusal is not None:
        raise PermissionDenied(refusal)
    if request.method == "POST":
        form = ExportForm(request.POST)
        if form.is_valid():
            export, _ = Export.request(snapshot, form.cleaned_data["format"], request.user)
            messages.info(
                request,
                f"{export}: {export.get_status_display().lower()}.",
            )
        else:
            messages.error(request, " ".join(form.errors["format"]))
        return redirect(experiment.get_absolute_url() + "#snapshots-card")
    (exports,) = export_cells(experiment, [snapshot])
    context = {
        "experiment": experiment,
        "snapshot": snapshot,
        "exports": exports,
        "export_work_problem": work_problem(request.user, experiment.team_id),
    }
    return render(request, "training/_exports.html", context)


def export_download(request, pk, export_pk):
    experiment = get_visible_or_404(Experiment.objects.select_related("dataset"), request.user, pk=pk)
    export = get_object_or_404(experiment.exports, pk=export_pk)
    return export_file(request.user, export)


def export_file(user, export):
    """The zip of a finished export, for the page and the API alike."""
    refusal = Export.refusal(user, export.experiment)
    if refusal is not None:
        raise PermissionDenied(refusal)
    if export.status != Export.Status.DONE:
        raise Http404(f"This export is {export.get_status_display().lower()}: there is nothing to download.")
    try:
        file = open(export.path, "rb")
    except FileNotFoundError:
        raise Http404("The export's file is gone; export the snapshot again.") from None
    audit.record(audit.Action.DOWNLOAD, user=user, obj=export.experiment, detail=f"export {export}")
    return FileResponse(file, as_attachment=True, filename=export.filename, content_type="application/zip")


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
    curves = [{"id": r["experiment"].pk, "name": r["experiment"].name, "points": r["curve"]} for r in rows]
    ctx = {"sweep": sweep, "rows": rows, "curves": curves}
    return render(request, "training/sweep.html", ctx)


MAX_COMPARED = 20


def experiment_compare(request):
    """Experiments side by side: /experiments/compare/?ids=1,2,3 (or `ids` repeated, as the
    console's form sends it without its script). Ids of experiments this user may not see
    are left out without a word, so that nobody learns what exists."""
    parts = [part.strip() for value in request.GET.getlist("ids") for part in value.split(",") if part.strip()]
    problem = None
    if not parts or not all(part.isdigit() for part in parts):
        problem = "Give the experiments to compare by their numbers, separated by commas: ?ids=3,5."
    elif len(set(parts)) > MAX_COMPARED:
        problem = f"Compare at most {MAX_COMPARED} experiments at a time."
    if problem:
        return render(request, "training/compare.html", {"problem": problem}, status=400)
    ids = list(dict.fromkeys(int(part) for part in parts))
    found = (
        Experiment.objects.visible_to(request.user)
        .select_related("dataset")
        .with_visibility_of(request.user, "dataset")
        .prefetch_related("metrics")
        .in_bulk(ids)
    )
    experiments = [found[pk] for pk in ids if pk in found]
    if not experiments:
        raise Http404("No experiment to compare.")
    ctx = {"experiments": experiments}
    if len(experiments) < 2:
        ctx["problem"] = "Pick at least two experiments to compare them: tick them on the console."
        return render(request, "training/compare.html", ctx)
    metrics = [list(experiment.metrics.all()) for experiment in experiments]
    datasets = [e.dataset.name if e.dataset_visible else "a dataset you cannot see" for e in experiments]
    ctx.update(
        settings_rows=compare.settings_rows(experiments, datasets),
        metric_rows=compare.metric_rows([compare.summary(rows) for rows in metrics]),
        curves=[
            {"name": experiment.name, "points": compare.curve(experiment, rows)}
            for experiment, rows in zip(experiments, metrics, strict=True)
        ],
    )
    return render(request, "training/compare.html", ctx)


@require_POST
def experiment_delete(request, pk):
    experiment = get_editable_or_404(Experiment.objects, request.user, pk=pk)
    if experiment.status == Experiment.Status.RUNNING:
        messages.error(request, "This experiment is running; abort it first.")
        return redirect(experiment)
    directory = experiment.directory
    experiment.request_abort()  # a queued job finds nothing to claim
    audit.record(audit.Action.DELETED, user=request.user, obj=experiment, request=request)
    experiment.delete()
    shutil.rmtree(directory, ignore_errors=True)
    messages.success(request, f"Experiment “{experiment.name}” was deleted.")
    return redirect("console")


def lr_preview(request):
    """The learning rate over the run for the form's current values, for its live chart.
    The same formula the engine trains with (training/schedules.py), without JAX.

    With ?recipe=1, the default recipe of ?network for ?epochs instead (training/recipes.py):
    the fields the form fills in, and a sentence saying what will run."""
    params = request.GET
    if params.get("recipe"):
        network = params.get("network") or recipes.DEFAULT_NETWORK
        fields = recipes.form_initial(network, params.get("epochs"))
        epochs = recipes.form_initial_epochs(params.get("epochs"))
        return JsonResponse({"fields": fields, "summary": recipes.recipe_for(network).summary(epochs)})
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
    config = TrainConfig(learning_rate=rate, epochs=epochs, lr_policy=policy, batch_accumulation=accumulation)
    try:
        schedules.check_rates(config, steps)  # an infinite rate is no JSON number
    except ValueError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    points = schedules.learning_rate_curve(config, steps, points=min(201, 10 * epochs + 1))
    return JsonResponse({"points": points})


def _number(params, name):
    try:
        return float(params[name])
    except ValueError:
        raise ValueError(f"{name.replace('_', ' ').capitalize()} must be a number.") from None
