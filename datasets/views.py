import shutil

from django.contrib import messages
from django.db.models import ProtectedError
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.access import can_edit, get_editable_or_404, get_visible_or_404
from datasets.forms import DatasetForm, candidate_folders
from datasets.models import Dataset


def dataset_new(request):
    if request.method == "POST":
        form = DatasetForm(request.POST, user=request.user)
        if form.is_valid():
            dataset = form.save(commit=False)
            dataset.owner = request.user
            dataset.save()
            dataset.enqueue_build()
            return redirect(dataset)
    else:
        form = DatasetForm(user=request.user)

    ctx = {"form": form, "folders": candidate_folders()}
    return render(request, "datasets/new.html", ctx)


def dataset_detail(request, pk):
    dataset = get_visible_or_404(Dataset.objects.select_related("owner", "team"), request.user, pk=pk)
    ctx = {
        "dataset": dataset,
        "can_edit": can_edit(request.user, dataset),
        "experiments": dataset.experiments.visible_to(request.user),
    }
    return render(request, "datasets/detail.html", ctx)


@require_POST
def dataset_delete(request, pk):
    dataset = get_editable_or_404(Dataset.objects, request.user, pk=pk)
    if dataset.status == Dataset.Status.RUNNING:
        messages.error(request, "This dataset is being built; delete it once the build has finished.")
        return redirect(dataset)
    directory = dataset.directory
    try:
        dataset.delete()
    except ProtectedError:
        messages.error(request, "This dataset is used by experiments; delete those first.")
        return redirect(dataset)
    # Files go after the row, so a failed delete never leaves a row without its data.
    shutil.rmtree(directory, ignore_errors=True)
    messages.success(request, f"Dataset “{dataset.name}” was deleted.")
    return redirect("console")
