"""A snapshot as a self-contained archive: everything needed to use the weights
elsewhere, with nothing of the platform required to read it."""

import io
import json
import zipfile

from django.utils import timezone


def network_spec_text(experiment):
    if experiment.is_custom:
        return experiment.network_spec
    from models.networks import standard_spec_text

    return standard_spec_text(experiment.network, experiment.dataset.image_shape)


def snapshot_archive(snapshot, *, with_dataset):
    """A zip in memory (snapshots of the networks here are megabytes, not gigabytes).

    Without `with_dataset` (a viewer who may not see the experiment's dataset) it leaves out
    what belongs to the dataset: its name, its labels and its mean image."""
    experiment = snapshot.experiment
    dataset = experiment.dataset
    augmentation = experiment.options.get("augmentation", {})
    preprocessing = {
        "width": dataset.width,
        "height": dataset.height,
        "channels": dataset.channels,
        "resize_mode": dataset.resize_mode,
        "mean_subtraction": augmentation.get("use_mean", "image"),
        "crop_size": augmentation.get("crop_size"),
        "scale": "(pixels - mean) / 255",
    }
    info = {
        "experiment": experiment.name,
        "dataset": dataset.name if with_dataset else None,
        "network": experiment.network,
        "epoch": snapshot.epoch,
        "val_loss": snapshot.val_loss,
        "val_accuracy": snapshot.val_accuracy,
        "exported": timezone.now().isoformat(),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(snapshot.path, "snapshot.ckpt")
        archive.writestr("network.yaml", network_spec_text(experiment))
        if with_dataset:
            archive.writestr("labels.txt", "\n".join(dataset.classes) + "\n")
        archive.writestr("preprocessing.json", json.dumps(preprocessing, indent=2))
        archive.writestr("info.json", json.dumps(info, indent=2))
        mean = dataset.directory / "mean.npy"
        if with_dataset and mean.exists():
            archive.write(mean, "mean.npy")
        archive.writestr(
            "README.txt",
            "snapshot.ckpt: an .npz archive; model/<layer path> are the weights, optimizer/ the solver state.\n"
            "network.yaml: the network spec; labels.txt: class names by output index;\n"
            "preprocessing.json + mean.npy: resize the image as described, then (pixels - mean) / 255.\n",
        )
    buffer.seek(0)
    return buffer
