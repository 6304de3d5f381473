import shutil

from django.contrib import messages
from django.db.models import OuterRef, Subquery
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.access import can_edit, get_editable_or_404, get_visible_or_404
from datasets import imaging
from datasets.models import Dataset
from training import inference
from training.forms import ClassifyForm, ExperimentForm
from training.models import EpochMetric, Experiment


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
    }
    return render(request, "training/console.html", ctx)


def experiment_new(request):
    if request.method == "POST":
        form = ExperimentForm(request.POST, user=request.user)
        if form.is_valid():
            experiment = form.save(commit=False)
            experiment.owner = request.user
            experiment.save()
            experiment.enqueue_training()
            return redirect(experiment)
    else:
        initial = {}
        dataset_id = request.GET.get("dataset", "")
        if dataset_id.isdigit():
            dataset = Dataset.objects.visible_to(request.user).filter(pk=dataset_id).first()
            if dataset is not None:
                initial = {"dataset": dataset, "name": f"{dataset.name} LeNet"}
        form = ExperimentForm(user=request.user, initial=initial)

    return render(request, "training/new.html", {"form": form})


def experiment_detail(request, pk, classify_form=None, classification=None):
    experiment = get_visible_or_404(
        Experiment.objects.select_related("dataset", "owner", "team"), request.user, pk=pk
    )
    snapshots = experiment.snapshots.all()
    ctx = {
        "experiment": experiment,
        "can_edit": can_edit(request.user, experiment),
        "metrics": [row.as_event() for row in experiment.metrics.all()],
        "snapshots": snapshots,
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
