"""Experiments side by side: every setting (training.config.from_experiment, so the same
configuration the engine trained with), their curves and their final and best metrics."""

import dataclasses
import math
from datetime import timedelta

from training import config

# Where the form's label is missing or would be ambiguous side by side.
LABELS = {
    "network": "Network",
    "epochs": "Epochs",
    "batch_size": "Batch size",
    "learning_rate": "Base learning rate",
    "solver": "Solver",
    "momentum": "Momentum",
    "seed": "Seed",
    "weight_decay": "Weight decay",
    "batch_accumulation": "Batch accumulation",
    "shuffle": "Shuffle every epoch",
    "patience": "Early stopping patience",
    "lr_policy.policy": "Learning rate policy",
    "augmentation.crop_size": "Crop size",
    "augmentation.hsv_h": "HSV hue shift",
    "augmentation.hsv_s": "HSV saturation shift",
    "augmentation.hsv_v": "HSV value shift",
}


def label_of(key):
    if key in LABELS:
        return LABELS[key]
    from training.forms import ExperimentForm

    group, _, name = key.rpartition(".")
    field = ExperimentForm.base_fields.get(name)
    text = str(field.label) if field is not None and field.label else name.replace("_", " ").capitalize()
    if group != "lr_policy":
        return text
    # Several policies have a "Gamma": named by their policy, as the form groups them.
    policy = name.partition("_")[0]
    return f"{policy.capitalize()} policy: {text[0].lower()}{text[1:]}"


def flat_settings(train_config):
    """{"epochs": 10, …, "lr_policy.policy": "step", "augmentation.flip": "none", …}"""
    flat = {}
    for field in dataclasses.fields(train_config):
        value = getattr(train_config, field.name)
        if dataclasses.is_dataclass(value):
            for inner, inner_value in flat_settings(value).items():
                flat[f"{field.name}.{inner}"] = inner_value
        else:
            flat[field.name] = value
    return flat


def shown(key, value, train_config):
    if key == "weight_decay" and value is None:
        return f"{train_config.resolved_weight_decay:g} (learning rate / 100)"
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple | list):
        return ", ".join(shown(key, item, train_config) for item in value)
    return str(value)


def settings_rows(experiments, dataset_names):
    """One row per setting: its label, each experiment's value as shown, and whether they
    differ. `dataset_names` gives each experiment's dataset as this viewer may see it."""
    columns = []
    for experiment, dataset in zip(experiments, dataset_names, strict=True):
        values = {"dataset": dataset, "network": experiment.network_title}
        try:
            train_config = config.from_experiment(experiment)
        except ValueError as exc:  # a row older than today's options
            values["options"] = f"cannot be read: {exc}"
        else:
            for key, value in flat_settings(train_config).items():
                if key != "network":
                    values[key] = shown(key, value, train_config)
        values["keep_snapshots"] = str(experiment.keep_snapshots or "all")
        values["device"] = experiment.device or "–"
        columns.append(values)
    labels = {"dataset": "Dataset", "keep_snapshots": "Snapshots kept", "device": "Ran on", "options": "Options"}
    keys = list(dict.fromkeys(key for column in columns for key in column))
    rows = []
    for key in keys:
        values = [column.get(key, "–") for column in columns]
        rows.append({"key": key, "label": labels.get(key) or label_of(key), "values": values,
                     "differs": len(set(values)) > 1})  # fmt: skip
    if any(experiment.is_custom for experiment in experiments):
        specs = [experiment.network_spec if experiment.is_custom else "" for experiment in experiments]
        rows.insert(2, {"key": "network_spec", "label": "Network spec", "values": specs,
                        "differs": len(set(specs)) > 1, "long": True})  # fmt: skip
    return rows


def curve(experiment, metrics):
    """The experiment's points as the page plots them: each epoch's event plus `wall`, the
    seconds since the run first started."""
    if not metrics:
        return []
    origin = experiment.started
    if origin is None:
        first = metrics[0]
        origin = first.created - timedelta(seconds=first.seconds)
    return [{**row.as_event(), "wall": max(0.0, (row.created - origin).total_seconds())} for row in metrics]


def summary(metrics):
    """The final epoch's metrics and the best of each over the run."""
    epochs = [m for m in metrics if m.train_loss is not None]
    last = epochs[-1] if epochs else None
    validated = [m for m in metrics if m.val_accuracy is not None]
    best_accuracy = max(validated, key=lambda m: m.val_accuracy, default=None)
    with_loss = [m for m in metrics if m.val_loss is not None and math.isfinite(m.val_loss)]
    best_loss = min(with_loss, key=lambda m: m.val_loss, default=None)
    return {
        "epoch": last.epoch if last else None,
        "train_loss": last.train_loss if last else None,
        "val_loss": last.val_loss if last else None,
        "val_accuracy": last.val_accuracy if last else None,
        "best_val_accuracy": best_accuracy.val_accuracy if best_accuracy else None,
        "best_val_accuracy_epoch": best_accuracy.epoch if best_accuracy else None,
        "best_val_loss": best_loss.val_loss if best_loss else None,
        "best_val_loss_epoch": best_loss.epoch if best_loss else None,
        "seconds": sum(m.seconds for m in epochs),
    }


# (key of summary(), label, which is best: "min", "max" or None)
METRICS = [
    ("epoch", "Epochs trained", None),
    ("train_loss", "Final train loss", "min"),
    ("val_loss", "Final validation loss", "min"),
    ("val_accuracy", "Final validation accuracy", "max"),
    ("best_val_loss", "Best validation loss", "min"),
    ("best_val_accuracy", "Best validation accuracy", "max"),
    ("seconds", "Training time", "min"),
]


def metric_rows(summaries):
    """One row per metric: each experiment's value as text, the best one marked."""
    rows = []
    for key, label, best in METRICS:
        values = [s[key] for s in summaries]
        known = [v for v in values if v is not None]
        winner = (min if best == "min" else max)(known) if best and len(known) > 1 else None
        cells = []
        for s, value in zip(summaries, values, strict=True):
            text = _metric_text(key, value)
            if key.startswith("best_") and value is not None:
                text += f" (epoch {s[key + '_epoch']:g})"
            cells.append({"text": text, "best": winner is not None and value == winner})
        rows.append({"key": key, "label": label, "cells": cells})
    return rows


def _metric_text(key, value):
    if value is None:
        return "–"
    if key.endswith("accuracy"):
        return f"{100 * value:.2f}%"
    if key == "seconds":
        return format_seconds(value)
    if key == "epoch":
        return f"{value:g}"
    return f"{value:.4f}"


def format_seconds(seconds):
    if seconds >= 3600:
        return f"{int(seconds // 3600)} h {round(seconds % 3600 / 60)} min"
    if seconds >= 60:
        return f"{int(seconds // 60)} min {round(seconds % 60)} s"
    return f"{seconds:.1f} s"
