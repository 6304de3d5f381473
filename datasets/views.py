import base64
import io
import os

import numpy as np
from django.contrib import messages
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import ProtectedError
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from PIL import Image, ImageOps

from accounts import audit
from accounts.access import can_edit, get_editable_or_404, get_visible_or_404
from datasets import imaging, rules
from datasets.forms import MAX_SIDE, DatasetForm, DatasetSettingsForm, candidate_folders
from datasets.models import SPLIT_NAMES, SPLITS, Dataset

GALLERY_PAGE_SIZE = 60
SHOWN_SKIPPED = 500
PREVIEW_SIDE = 256  # the original is shown at most this large
IMAGE_CACHE = "private, max-age=86400"  # a built dataset's images never change; only its viewers may keep them


def dataset_list(request):
    """/datasets/: the console lists them (its filters apply), so send people there."""
    query = request.GET.urlencode()
    return redirect(f"{reverse('console')}{'?' + query if query else ''}#datasets")


def dataset_new(request, clone_source=None):
    if request.method == "POST":
        form = DatasetForm(request.POST, request.FILES, user=request.user)
        if form.is_valid():
            dataset = form.create(request.user)
            return redirect(dataset)
    elif clone_source is not None:
        form = DatasetForm(user=request.user, initial=clone_initial(clone_source), clone_source=clone_source)
    else:
        form = DatasetForm(user=request.user)

    ctx = {"form": form, "folders": candidate_folders(), "clone_source": form.clone_source}
    return render(request, "datasets/new.html", ctx)


def dataset_clone(request, pk):
    # Anyone who may see a dataset may build another from the same images, as their own.
    source = get_visible_or_404(Dataset.objects, request.user, pk=pk)
    return dataset_new(request, clone_source=source)


def clone_initial(source):
    fields = [
        "source_type", "source_folder", "val_folder", "test_folder", "labels_file", "train_list", "val_list",
        "test_list", "list_prefix", "channels", "width", "height", "resize_mode", "val_percent", "test_percent",
        "seed", "min_per_class", "max_per_class", "shuffle", "encoding",
    ]  # fmt: skip
    initial = {field: getattr(source, field) for field in fields}
    initial["name"] = f"{source.name} (copy)"
    return initial


def dataset_detail(request, pk, settings_form=None):
    dataset = get_visible_or_404(Dataset.objects.select_related("owner", "team", "cloned_from"), request.user, pk=pk)
    editable = can_edit(request.user, dataset)
    experiments = dataset.experiments.visible_to(request.user)
    cloned_from = dataset.cloned_from
    if cloned_from is not None and not Dataset.objects.visible_to(request.user).filter(pk=cloned_from.pk).exists():
        cloned_from = None
    ctx = {
        "dataset": dataset,
        "can_edit": editable,
        "experiments": experiments,
        "hidden_experiments": dataset.experiments.count() - len(experiments),
        "settings_form": settings_form
        or (DatasetSettingsForm(instance=dataset, user=request.user) if editable else None),
        "cloned_from": cloned_from,
        "skipped": dataset.skipped[:SHOWN_SKIPPED],
        "skipped_more": max(0, len(dataset.skipped) - SHOWN_SKIPPED),
        "has_mean": dataset.is_usable and (dataset.directory / "mean.npy").exists(),
    }
    return render(request, "datasets/detail.html", ctx)


@require_POST
def dataset_settings(request, pk):
    dataset = get_editable_or_404(Dataset.objects, request.user, pk=pk)
    form = DatasetSettingsForm(request.POST, instance=dataset, user=request.user)
    if not form.is_valid():
        return dataset_detail(request, pk, settings_form=form)
    form.save()
    messages.success(request, "Saved.")
    return redirect(dataset)


@require_POST
def dataset_delete(request, pk):
    dataset = get_editable_or_404(Dataset.objects, request.user, pk=pk)
    if dataset.status == Dataset.Status.RUNNING:
        messages.error(request, "This dataset is being built; delete it once the build has finished.")
        return redirect(dataset)
    try:
        with transaction.atomic():
            audit.record(audit.Action.DELETED, user=request.user, obj=dataset, request=request)
            dataset.delete_with_files()
    except ProtectedError:
        messages.error(request, in_use_message(dataset, request.user))
        return redirect(dataset)
    messages.success(request, f"Dataset “{dataset.name}” was deleted.")
    return redirect("console")


def in_use_message(dataset, user):
    """Which experiments stop a delete: by name those the user may see, the others counted."""
    visible = list(dataset.experiments.visible_to(user).values_list("name", flat=True))
    hidden = dataset.experiments.count() - len(visible)
    names = [f"“{name}”" for name in visible] + ([f"{hidden} you cannot see"] if hidden else [])
    return f"This dataset is used by experiments ({', '.join(names)}); delete those first."


# --- Exploring the stored images ---------------------------------------------------------------


def dataset_explore(request, pk):
    dataset = get_visible_or_404(Dataset.objects, request.user, pk=pk)
    if not dataset.is_usable:
        raise Http404("This dataset has no images yet.")
    splits = [split for split in SPLITS if dataset.split_total(split)]
    split = request.GET.get("split") if request.GET.get("split") in splits else splits[0]
    chosen_class = _int_or_none(request.GET.get("class"))
    if chosen_class is not None and not 0 <= chosen_class < len(dataset.classes):
        chosen_class = None
    labels = _stored(dataset, split).labels
    indexes = np.arange(len(labels)) if chosen_class is None else np.flatnonzero(labels == chosen_class)
    page = Paginator(indexes, GALLERY_PAGE_SIZE).get_page(request.GET.get("page"))
    ctx = {
        "dataset": dataset,
        "splits": [(s, SPLIT_NAMES[s], dataset.split_total(s)) for s in splits],
        "split": split,
        "classes": list(enumerate(dataset.classes)),
        "chosen_class": chosen_class,
        "page": page,
        "images": [(int(i), dataset.classes[int(labels[i])]) for i in page.object_list],
        "thumb_side": _thumb_side(dataset),
    }
    return render(request, "datasets/explore.html", ctx)


@require_GET
def dataset_image(request, pk, split, index):
    """One stored image, as the network will see it (resized), as PNG."""
    dataset = get_visible_or_404(Dataset.objects, request.user, pk=pk)
    if not dataset.is_usable or split not in SPLITS:
        raise Http404("No such image.")
    stored = _stored(dataset, split)
    if not 0 <= index < len(stored):
        raise Http404("No such image.")
    response = HttpResponse(stored.png(index), content_type="image/png")
    response["Cache-Control"] = IMAGE_CACHE
    return response


@require_GET
def dataset_mean(request, pk):
    dataset = get_visible_or_404(Dataset.objects, request.user, pk=pk)
    try:
        mean = np.load(dataset.directory / "mean.npy") if dataset.is_usable else None
    except FileNotFoundError:
        mean = None
    if mean is None:
        raise Http404("This dataset has no mean image.")
    response = HttpResponse(imaging.encode_image(imaging.mean_pixels(mean)), content_type="image/png")
    response["Cache-Control"] = IMAGE_CACHE
    return response


def _stored(dataset, split):
    try:
        return imaging.StoredSplit(dataset.directory, split)
    except FileNotFoundError:
        raise Http404("The files of this dataset are missing.") from None


def _thumb_side(dataset):
    # Small images are shown enlarged (pixelated), large ones reduced: a grid of even tiles.
    return max(48, min(128, 4 * max(dataset.width, dataset.height)))


def _int_or_none(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# --- Live preview of the resize modes ----------------------------------------------------------


@require_http_methods(["GET", "POST"])
def dataset_preview(request):
    """Each resize mode applied to a sample image: the first image of a folder the user named
    (import roots apply), of the dataset being cloned, or an image the user sent.  JSON with PNG
    data URIs, so the form can show all four at once."""
    params = request.POST if request.method == "POST" else request.GET
    try:
        width, height = (_side(params.get(name)) for name in ("width", "height"))
        channels = int(params.get("channels") or 1)
        if channels not in (1, 3):
            raise ValueError
    except ValueError:
        return JsonResponse({"error": f"Width and height must be 1 to {MAX_SIDE} pixels."}, status=400)
    try:
        name, data = _preview_source(request, params)
        modes = {
            mode: _data_uri(
                imaging.encode_image(
                    imaging.load_image(
                        io.BytesIO(data), width=width, height=height, channels=channels, resize_mode=mode
                    )
                )
            )
            for mode in imaging.RESIZE_MODES
        }
        original = _data_uri(_reduced(data, channels))
    except imaging.ImagingError as exc:
        return JsonResponse({"error": str(exc)}, status=400)
    return JsonResponse({"name": name, "original": original, "modes": modes, "width": width, "height": height})


def _side(value):
    side = int(value or 0)
    if not 1 <= side <= MAX_SIDE:
        raise ValueError
    return side


def _preview_source(request, params):
    upload = request.FILES.get("image")
    if upload is not None:
        if upload.size > 20 * 1024 * 1024:
            raise imaging.ImagingError("The image is larger than 20 MiB.")
        return upload.name, upload.read()
    clone_of = _int_or_none(params.get("clone_of"))
    folder_value = (params.get("folder") or "").strip()
    if folder_value:
        folder = rules.resolve_import_path(folder_value)
    elif clone_of is not None:
        source = Dataset.objects.visible_to(request.user).filter(pk=clone_of).first()
        if source is None or source.source_type != Dataset.SourceType.ARCHIVE:
            raise imaging.ImagingError("Name a folder to preview.")
        folder = source.extracted_dir
    else:
        raise imaging.ImagingError("Name a folder to preview.")
    path = first_image(folder)
    if path is None:
        raise imaging.ImagingError(f"No image found in {folder}.")
    with open(path, "rb") as file:
        return os.path.relpath(path, folder), file.read(20 * 1024 * 1024)


def first_image(folder, budget=5000):
    """The first image file under folder, depth first in name order, looking at no more than
    `budget` entries (a preview must answer at once, however large the folder)."""
    stack = [str(folder)]
    while stack and budget > 0:
        try:
            with os.scandir(stack.pop()) as scan:
                entries = sorted(
                    (e for e in scan if not e.name.startswith(".") and not e.is_symlink()), key=lambda e: e.name
                )
        except OSError:
            continue
        budget -= len(entries)
        for entry in entries:
            if entry.is_file() and imaging.is_image_name(entry.name):
                return entry.path
        stack.extend(reversed([e.path for e in entries if e.is_dir()]))
    return None


def _reduced(data, channels):
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = ImageOps.exif_transpose(image)
            image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
            buffer = io.BytesIO()
            image.convert("L" if channels == 1 else "RGB").save(buffer, format="PNG")
            return buffer.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise imaging.ImagingError(f"cannot show the image: {exc}") from None


def _data_uri(png):
    return "data:image/png;base64," + base64.b64encode(png).decode()
