"""Evaluations side by side on the compare page: where several of the compared experiments
classified the same images, their overall and per-class metrics, the best of each in bold."""

# (key in a per_class entry, column heading)
CLASS_METRICS = [("precision", "Precision"), ("recall", "Recall"), ("f1", "F1")]


def source_tables(experiments, evaluations):
    """One table per source that two or more of `experiments` were evaluated on, from the
    newest finished evaluation of each (`evaluations` newest first, their experiments among
    `experiments`). A table's columns follow the experiments' order."""
    newest = {}
    for evaluation in evaluations:
        newest.setdefault(evaluation.source_key, {}).setdefault(evaluation.experiment_id, evaluation)
    tables = []
    for found in newest.values():
        if len(found) < 2:
            continue
        columns = [found[experiment.pk] for experiment in experiments if experiment.pk in found]
        results = [evaluation.results for evaluation in columns]
        labels = list(dict.fromkeys(entry["label"] for result in results for entry in result.get("per_class", [])))
        per_class = [{entry["label"]: entry for entry in result.get("per_class", [])} for result in results]
        tables.append(
            {
                "source": columns[0].source_text,
                "columns": columns,
                "overall": [
                    {"label": label, "cells": _best_marked([result.get(key) for result in results])}
                    for key, label in (("top1", "Top-1 accuracy"), ("top5", "Top-5 accuracy"))
                ],
                "classes": [
                    {
                        "label": label,
                        "cells": _interleaved(
                            [
                                _best_marked([(c.get(label) or {}).get(key) for c in per_class])
                                for key, _ in CLASS_METRICS
                            ]
                        ),
                    }
                    for label in labels
                ],
            }
        )
    return tables


def _best_marked(values):
    known = [value for value in values if value is not None]
    best = max(known) if len(known) > 1 else None
    return [
        {"text": "–" if value is None else f"{100 * value:.1f}%", "best": best is not None and value == best}
        for value in values
    ]


def _interleaved(per_metric):
    """[[p1, p2], [r1, r2], [f1, f2]] → [p1, r1, f1, p2, r2, f2]: one column group per experiment."""
    return [cell for group in zip(*per_metric, strict=True) for cell in group]
