import csv
import json

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpResponse, HttpResponseBadRequest, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_POST

from accounts import audit
from accounts.access import can_edit, can_view, get_editable_or_404, get_visible_or_404
from datasets import imaging, rules
from evaluations import core
from evaluations.forms import EvaluationForm
from evaluations.models import Evaluation
from training import console, inference
from training.inference import image_options
from training.models import Experiment

PAGE_SIZE = 48
TOP_PER_CLASS = 8
MISTAKES = 24


def evaluation_list(request):
    """Every evaluation the user may see, newest first, a page at a time (the console's pager)."""
    rows = Evaluation.objects.visible_to(request.user).select_related("experiment", "owner", "snapshot")
    page = console.page(rows.order_by("-created", "-pk"), request, "page")
    return render(request, "evaluations/list.html", {"evaluations": page})


def evaluation_new(request, pk):
    experiment = get_visible_or_404(Experiment.objects.select_related("dataset"), request.user, pk=pk)
    if request.method == "POST":
        form = EvaluationForm(request.POST, request.FILES, experiment=experiment, user=request.user)
        if form.is_valid():
            return redirect(form.create())
    else:
        form = EvaluationForm(experiment=experiment, user=request.user)
    ctx = {"experiment": experiment, "form": form}
    return render(request, "evaluations/new.html", ctx)


def evaluation_detail(request, pk):
    evaluation = _visible(request, pk)
    ctx = {"evaluation": evaluation, "can_edit": can_edit(request.user, evaluation)}
    if evaluation.status == Evaluation.Status.DONE:
        ctx.update(_report(evaluation))
    return render(request, "evaluations/detail.html", ctx)


def evaluation_images(request, pk):
    """The images of one confusion-matrix cell, surest first, a page at a time."""
    evaluation = _visible(request, pk)
    if evaluation.status != Evaluation.Status.DONE:
        raise Http404("This evaluation has no results yet.")
    classes = evaluation.results["labels"]
    try:
        true, predicted = (int(request.GET.get(name, "")) for name in ("true", "predicted"))
    except ValueError:
        return HttpResponseBadRequest("Give the cell as ?true=<class number>&predicted=<class number>.")
    if not (0 <= true < len(classes) and 0 <= predicted < len(classes)):
        return HttpResponseBadRequest(f"Class numbers go from 0 to {len(classes) - 1}.")
    rows, names = evaluation.rows(), evaluation.names()
    page = Paginator(core.cell(rows, true, predicted).tolist(), PAGE_SIZE).get_page(request.GET.get("page"))
    ctx = {
        "evaluation": evaluation,
        "true_label": classes[true],
        "predicted_label": classes[predicted],
        "true": true,
        "predicted": predicted,
        "page": page,
        "images": [_entry(evaluation, rows, names, classes, i) for i in page.object_list],
    }
    return render(request, "evaluations/images.html", ctx)


def evaluation_image(request, pk, row):
    """One evaluated image as the network saw it."""
    evaluation = _visible(request, pk)
    dataset = evaluation.experiment.dataset
    if evaluation.source == Evaluation.Source.SPLIT:
        _check_row(request, evaluation, row)
        png = imaging.StoredSplit(dataset.directory, evaluation.split).png(row)
    else:
        png = imaging.encode_image(_pixels(request, evaluation, row))
    response = HttpResponse(png, content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


def evaluation_image_inside(request, pk, row):
    """One evaluated image through the evaluation's snapshot again, layer by layer: the
    experiment page's classify result."""
    evaluation = _visible(request, pk)
    pixels = _pixels(request, evaluation, row)
    if evaluation.snapshot_id is None:
        raise Http404(f"The snapshot of epoch {evaluation.snapshot_label} was deleted since.")
    snapshot = evaluation.snapshot
    snapshot.experiment = evaluation.experiment
    try:
        classification = inference.classify_pixels(snapshot, pixels, layers=True, tiles=True, saliency=True)
    except FileNotFoundError:
        raise Http404(f"The snapshot of epoch {evaluation.snapshot_label} is no longer on disk.") from None
    entry = _entry(evaluation, evaluation.rows(), evaluation.names(), evaluation.results["labels"], row)
    ctx = {"evaluation": evaluation, "entry": entry, "classification": classification}
    return render(request, "evaluations/inside.html", ctx)


def evaluation_csv(request, pk):
    return results_csv(_visible(request, pk))


def evaluation_json(request, pk):
    evaluation = _finished(_visible(request, pk))
    body = json.dumps(list(core.records(evaluation.rows(), evaluation.names(), evaluation.results["labels"])))
    response = HttpResponse(body, content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{_filename(evaluation)}.json"'
    return response


def results_csv(evaluation):
    """Every row as CSV, streamed: path, true label, the top 5 with probabilities."""
    evaluation = _finished(evaluation)

    class Echo:
        def write(self, value):
            return value

    writer = csv.writer(Echo())
    records = core.records(evaluation.rows(), evaluation.names(), evaluation.results["labels"])
    lines = (writer.writerow(line) for line in _with_header(records))
    response = StreamingHttpResponse(lines, content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{_filename(evaluation)}.csv"'
    return response


@require_POST
def evaluation_delete(request, pk):
    evaluation = get_editable_or_404(Evaluation.objects.select_related("experiment"), request.user, pk=pk)
    if evaluation.status == Evaluation.Status.RUNNING:
        messages.error(request, "This evaluation is running; wait for it to finish.")
        return redirect(evaluation)
    experiment = evaluation.experiment
    audit.record(audit.Action.DELETED, user=request.user, obj=evaluation, request=request)
    evaluation.delete()
    messages.success(request, "The evaluation was deleted.")
    return redirect(experiment)


def _with_header(records):
    yield core.csv_header()
    for record in records:
        yield core.csv_row(record)


def _visible(request, pk):
    return get_visible_or_404(
        Evaluation.objects.select_related("experiment__dataset", "owner", "snapshot"), request.user, pk=pk
    )


def _check_row(request, evaluation, row):
    """Only an image the evaluation recorded, by its row: a stored image of the split (for
    one who may see the dataset), or a file the job classified."""
    if evaluation.status != Evaluation.Status.DONE or not 0 <= row < evaluation.results.get("count", 0):
        raise Http404("No such image in this evaluation.")
    if evaluation.source == Evaluation.Source.SPLIT and not can_view(request.user, evaluation.experiment.dataset):
        raise Http404("No such image in this evaluation.")


def _pixels(request, evaluation, row):
    """The recorded image `row` decoded as the dataset decodes its images."""
    _check_row(request, evaluation, row)
    dataset = evaluation.experiment.dataset
    if evaluation.source == Evaluation.Source.SPLIT:
        return imaging.StoredSplit(dataset.directory, evaluation.split).pixels(row)
    path = evaluation.names()["paths"][row]
    try:
        real = rules.resolve_import_path(path, allowed=[evaluation.directory])
        return imaging.load_image(real, **image_options(dataset))
    except imaging.ImagingError:
        raise Http404("This image is no longer readable.") from None


def _finished(evaluation):
    if evaluation.status != Evaluation.Status.DONE:
        raise Http404("This evaluation has no results yet.")
    return evaluation


def _filename(evaluation):
    return f"{slugify(evaluation.experiment.name) or 'experiment'}-evaluation-{evaluation.pk}"


def _entry(evaluation, rows, names, classes, i):
    label = int(rows.labels[i])
    return {
        "row": i,
        "name": names["names"][i],
        "true": classes[label] if label >= 0 else names["given"][i],
        "correct": label == int(rows.top_indices[i, 0]),
        "top": [
            (classes[int(c)], 100 * float(p))
            for c, p in zip(rows.top_indices[i, :3], rows.top_probabilities[i, :3], strict=True)
        ],
        "url": reverse("evaluation-image", args=[evaluation.pk, i]),
        "inside_url": reverse("evaluation-image-inside", args=[evaluation.pk, i]),
    }


def _report(evaluation):
    results = evaluation.results
    classes = results["labels"]
    rows, names = evaluation.rows(), evaluation.names()
    gallery = reverse("evaluation-images", args=[evaluation.pk])
    heat = []
    for i, counts in enumerate(results["confusion"]):
        total = sum(counts) or 1
        heat.append(
            {
                "label": classes[i],
                "total": sum(counts),
                "cells": [
                    {
                        "count": count,
                        "share": count / total,
                        "alpha": f"{0.08 + 0.92 * count / total:.2f}" if count else "0",
                        "dark": count / total > 0.5,
                        "url": f"{gallery}?true={i}&predicted={j}",
                        "predicted": classes[j],
                        "diagonal": i == j,
                    }
                    for j, count in enumerate(counts)
                ],
            }
        )
    top = core.top_per_class(rows, classes, TOP_PER_CLASS)
    return {
        "classes": classes,
        "heat": heat,
        "top_per_class": [
            (classes[c], [_entry(evaluation, rows, names, classes, int(i)) for i in found])
            for c, found in enumerate(top)
        ],
        "mistakes": [_entry(evaluation, rows, names, classes, int(i)) for i in core.confident_mistakes(rows, MISTAKES)],
        "heat_json": {"labels": classes},
    }
