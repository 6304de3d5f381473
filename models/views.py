"""The network editor's helpers (Customize, Visualize) and the team network library."""

import json

from django.contrib import messages
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.access import can_edit, get_editable_or_404, get_visible_or_404
from datasets.models import Dataset
from models.forms import SavedNetworkForm
from models.models import SavedNetwork
from training import config, console
from training.exports import network_spec_text
from training.models import Experiment


def network_spec(request):
    """The spec text to load into the editor: a standard network sized to a dataset, a
    previous experiment's network, or a saved one."""
    from models.networks import NETWORKS, standard_spec_text

    params = request.GET
    if params.get("experiment", "").isdigit():
        experiment = get_visible_or_404(
            Experiment.objects.select_related("dataset"), request.user, pk=params["experiment"]
        )
        return JsonResponse({"spec": network_spec_text(experiment), "source": experiment.name})
    if params.get("saved", "").isdigit():
        saved = get_visible_or_404(SavedNetwork.objects, request.user, pk=params["saved"])
        return JsonResponse({"spec": saved.spec, "source": saved.name})
    name = params.get("network", "")
    if name not in NETWORKS:
        raise Http404("No such standard network.")
    shape = None
    if params.get("dataset", "").isdigit():
        shape = get_visible_or_404(Dataset.objects, request.user, pk=params["dataset"]).image_shape
    return JsonResponse({"spec": standard_spec_text(name, shape), "source": NETWORKS[name].title})


@require_POST
def network_visualize(request):
    """Each layer's output shape, parameters and FLOPs, with the error pinned to its layer.
    Shapes come from nnx.eval_shape: nothing is allocated."""
    from models.networks import describe

    try:
        payload = json.loads(request.body or b"{}")
    except json.JSONDecodeError:
        return JsonResponse({"error": {"layer": None, "message": "The request was not JSON."}}, status=400)
    network = config.network_of(payload.get("network"), payload.get("spec"))
    if not network:
        return JsonResponse({"error": {"layer": None, "message": "Write a network first."}}, status=400)

    dataset_id = str(payload.get("dataset", ""))
    if dataset_id.isdigit():
        dataset = get_visible_or_404(Dataset.objects, request.user, pk=dataset_id)
        height, width, channels = dataset.image_shape
        num_classes = len(dataset.classes)
    else:  # no dataset chosen yet: MNIST-sized, as DIGITS' editor assumed
        height, width, channels, num_classes = 28, 28, 1, 10
    crop = payload.get("crop_size")
    if isinstance(crop, int) and crop > 0:
        height = width = crop

    summary = describe(network, (height, width, channels), num_classes)
    return JsonResponse(
        {
            "title": summary.title,
            "input_shape": list(summary.input_shape),
            "num_classes": summary.num_classes,
            "rows": [
                {
                    "path": row.path,
                    "name": row.name,
                    "type": row.type,
                    "depth": row.depth,
                    "detail": row.detail,
                    "output_shape": list(row.output_shape) if row.output_shape is not None else None,
                    "params": row.params,
                    "flops": row.flops,
                }
                for row in summary.rows
            ],
            "total_params": summary.total_params,
            "total_flops": summary.total_flops,
            "error": visualize_error(summary.error, network if payload.get("network") == config.CUSTOM else None),
        }
    )


def visualize_error(error, spec_text):
    """The error as the editor shows it: the layer's path, the message, and the line of the
    spec text (None for a standard network) for the editor to mark, where the text tells it."""
    from models.networks import error_line

    if error is None:
        return None
    layer, message = error
    return {"layer": layer, "message": message, "line": error_line(spec_text, layer) if spec_text else None}


def network_list(request):
    if request.method == "POST":
        form = SavedNetworkForm(request.POST, user=request.user)
        if form.is_valid():
            saved = form.save(commit=False)
            saved.owner = request.user
            saved.save()
            if request.headers.get("Accept") == "application/json":
                return JsonResponse({"id": saved.pk, "name": saved.name}, status=201)
            messages.success(request, f"Saved “{saved.name}” to the library.")
            return redirect(saved)
        if request.headers.get("Accept") == "application/json":
            return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
    else:
        form = SavedNetworkForm(user=request.user)

    networks = SavedNetwork.objects.visible_to(request.user).select_related("owner", "team").order_by("name", "pk")
    ctx = {"form": form, "networks": console.page(networks, request, "page")}
    return render(request, "models/list.html", ctx)


def network_detail(request, pk):
    """A saved network: its spec in the editor, Visualize, and, for whoever may change it, the
    form that edits, renames and re-shares it."""
    saved = get_visible_or_404(SavedNetwork.objects.select_related("owner", "team"), request.user, pk=pk)
    editable = can_edit(request.user, saved)
    if request.method == "POST":
        saved = get_editable_or_404(SavedNetwork.objects, request.user, pk=pk)
        form = SavedNetworkForm(request.POST, instance=saved, user=request.user)
        if form.is_valid():
            form.save()
            messages.success(request, f"Saved “{saved.name}”.")
            return redirect(saved)
    else:
        form = SavedNetworkForm(instance=saved, user=request.user) if editable else None
    ctx = {"network": saved, "can_edit": editable, "form": form}
    return render(request, "models/detail.html", ctx)


@require_POST
def network_delete(request, pk):
    saved = get_editable_or_404(SavedNetwork.objects, request.user, pk=pk)
    saved.delete()
    messages.success(request, f"“{saved.name}” was removed from the library.")
    return redirect("network-list")
