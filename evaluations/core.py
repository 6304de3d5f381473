"""Classifying many images and scoring the result, without Django: the evaluation job
feeds it batches, the pages read its rows. No JAX either: `predict` is handed in.

Rows are kept as arrays, one entry per image classified, in the order classified:

- ``labels``: the true class index, or -1 when the image has none the network knows
  (classified, not scored);
- ``top_indices`` / ``top_probabilities``: the network's best TOP_K classes, best first.

The images' names (paths, or "val/12" for a stored split) are kept beside them.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datasets.imaging import ImagingError, is_image_name
from datasets.lists import decode_text

TOP_K = 5
NO_LABEL = -1
# Images classified per call of predict: few enough calls that their fixed cost vanishes,
# and progress is still reported several times a second.
CHUNK = 1024
CHUNK_BYTES = 64 << 20  # of decoded files held before predicting them

Predict = Callable[[np.ndarray], np.ndarray]  # uint8 (N, H, W, C) -> probabilities (N, classes)
Progress = Callable[[int, int], object]

_LINE = re.compile(r"^(?P<path>.*\S)\s+(?P<label>\S+)$")


# --- What to classify ----------------------------------------------------------------------


@dataclass
class Item:
    path: str
    label: int = NO_LABEL  # the network's class index
    given: str = ""  # the label as the source named it, when the network does not know it


@dataclass
class Plan:
    items: list[Item] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (entry, why) left out before decoding

    def unknown_labels(self) -> dict[str, int]:
        return dict(Counter(item.given for item in self.items if item.given))


def check_count(count: int, what: str, limit: int) -> None:
    """A cap on one evaluation (EVALUATION_MAX_IMAGES), refused with the figures."""
    if count > limit:
        raise ImagingError(
            f"{what} holds {count:,} images; at most {limit:,} are evaluated at once (EVALUATION_MAX_IMAGES)."
        )


def label_index(text: str, classes: Sequence[str]) -> int:
    """A class by its name, else by its number; NO_LABEL when the network has no such class."""
    if text in classes:
        return list(classes).index(text)
    if text.isdigit() and int(text) < len(classes):
        return int(text)
    return NO_LABEL


def labelled_items(found: Iterable[tuple[str, str]], classes: Sequence[str]) -> list[Item]:
    """(path, class name) pairs as items; names the network does not know are kept as given."""
    index = {name: i for i, name in enumerate(classes)}
    return [Item(path, index.get(name, NO_LABEL), "" if name in index else name) for path, name in found]


def parse_list(data: bytes, classes: Sequence[str], name: str = "list") -> tuple[list[tuple[int, Item]], list]:
    """Lines ``path [label]`` of a list: ((line number, item) per image, (line, why) for lines
    left out). A line whose last word is an image file name is a path alone (spaces allowed);
    otherwise its last word is the label, by name or number."""
    entries, problems, seen = [], [], {}
    for number, raw in enumerate(decode_text(data, name).splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None or is_image_name(match["label"]):
            item = Item(line)
        else:
            label = label_index(match["label"], classes)
            item = Item(match["path"], label, match["label"] if label == NO_LABEL else "")
        if item.path in seen:
            problems.append((number, f"{item.path}: a repeat of line {seen[item.path]}"))
            continue
        seen[item.path] = number
        entries.append((number, item))
    return entries, problems


# --- Classifying ---------------------------------------------------------------------------


@dataclass
class Rows:
    labels: np.ndarray
    top_indices: np.ndarray
    top_probabilities: np.ndarray

    @classmethod
    def empty(cls, k: int = TOP_K) -> Rows:
        return cls(np.zeros(0, np.int32), np.zeros((0, k), np.int16), np.zeros((0, k), np.float32))

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def predicted(self) -> np.ndarray:
        return self.top_indices[:, 0].astype(np.int32)

    def save(self, path: str | Path) -> None:
        np.savez(path, labels=self.labels, top_indices=self.top_indices, top_probabilities=self.top_probabilities)

    @classmethod
    def load(cls, path: str | Path) -> Rows:
        with np.load(path) as data:
            return cls(data["labels"], data["top_indices"], data["top_probabilities"])


def top_k(probabilities: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """The k best classes of each row, best first, and their probabilities."""
    k = min(k, probabilities.shape[1])
    best = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(probabilities, best, axis=1), axis=1, kind="stable")
    best = np.take_along_axis(best, order, axis=1)
    return best.astype(np.int16), np.take_along_axis(probabilities, best, axis=1).astype(np.float32)


class _Collector:
    def __init__(self, total: int, progress: Progress | None):
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.total, self.done, self.progress = total, 0, progress

    def add(self, labels, probabilities, seen: int) -> None:
        indices, best = top_k(probabilities)
        self.parts.append((np.asarray(labels, np.int32), indices, best))
        self.done += seen
        if self.progress is not None:
            self.progress(self.done, self.total)

    def skip(self, seen: int) -> None:
        """Images that were all left out (none decoded)."""
        self.done += seen
        if self.progress is not None:
            self.progress(self.done, self.total)

    def rows(self) -> Rows:
        if not self.parts:
            return Rows.empty()
        labels, indices, best = (np.concatenate(column) for column in zip(*self.parts, strict=True))
        return Rows(labels, indices, best)


def classify_arrays(
    images: np.ndarray, labels: np.ndarray, predict: Predict, progress: Progress | None = None, chunk: int = CHUNK
) -> Rows:
    """Stored images (a memory-mapped split): nothing to decode."""
    collector = _Collector(len(images), progress)
    for start in range(0, len(images), chunk):
        batch = np.asarray(images[start : start + chunk])
        collector.add(labels[start : start + chunk], predict(batch), len(batch))
    return collector.rows()


def classify_files(
    items: Sequence[Item],
    batches: Callable[[Sequence[str], int, int], Iterator[tuple[np.ndarray, list[tuple[int, str]]]]],
    predict: Predict,
    progress: Progress | None = None,
    chunk: int = 2 * CHUNK,
    batch: int = 256,
) -> tuple[Rows, list[Item], list[tuple[str, str]]]:
    """Image files, decoded by `batches` (imaging.DecodePool.batches: in other processes)
    while this one predicts. Returns the rows, the items they are of, and (path, why) for
    the files that could not be decoded. Each predict call of a chunk is a pause in taking
    decoded batches: fewer, larger ones went faster (bench/evaluate_bench.py), up to
    CHUNK_BYTES of images held."""
    collector = _Collector(len(items), progress)
    kept: list[Item] = []
    failed: list[tuple[str, str]] = []
    pending: list[np.ndarray] = []
    pending_labels: list[int] = []
    seen = 0

    def flush():
        nonlocal pending, pending_labels, seen
        if pending_labels:
            collector.add(pending_labels, predict(np.concatenate(pending)), seen)
        elif seen:
            collector.skip(seen)
        pending, pending_labels, seen = [], [], 0

    # It holds a chunk before predicting: `batches` keeps decoding meanwhile.
    for number, (images, failures) in enumerate(batches([item.path for item in items], batch, chunk)):
        chunk_items = items[number * batch : (number + 1) * batch]
        bad = {index for index, _ in failures}
        failed += [(chunk_items[index].path, reason) for index, reason in failures]
        good = [item for index, item in enumerate(chunk_items) if index not in bad]
        kept += good
        pending.append(images)
        pending_labels += [item.label for item in good]
        seen += len(chunk_items)
        if len(pending_labels) >= chunk or sum(part.nbytes for part in pending) >= CHUNK_BYTES:
            flush()
    flush()
    return collector.rows(), kept, failed


# --- Scoring -------------------------------------------------------------------------------


def metrics(rows: Rows, classes: Sequence[str]) -> dict:
    """Accuracy, the confusion matrix (rows: true class, columns: predicted, in `classes`
    order) and per-class precision, recall, F1 and support, over the images with a label."""
    n = len(classes)
    scored = rows.labels >= 0
    true, predicted = rows.labels[scored], rows.predicted[scored]
    confusion = np.zeros((n, n), np.int64)
    np.add.at(confusion, (true, predicted), 1)
    hits = np.diag(confusion)
    support, predicted_as = confusion.sum(axis=1), confusion.sum(axis=0)
    precision = np.divide(hits, predicted_as, out=np.zeros(n), where=predicted_as > 0)
    recall = np.divide(hits, support, out=np.zeros(n), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(n), where=(precision + recall) > 0)
    in_top5 = (rows.top_indices[scored] == true[:, None]).any(axis=1)
    count = int(scored.sum())
    return {
        "count": len(rows),
        "scored": count,
        "top1": float(hits.sum() / count) if count else None,
        "top5": float(in_top5.mean()) if count else None,
        "labels": list(classes),
        "confusion": confusion.tolist(),
        "per_class": [
            {
                "label": classes[i],
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in range(n)
        ],
    }


# --- What the pages show -------------------------------------------------------------------


def cell(rows: Rows, true: int, predicted: int) -> np.ndarray:
    """The rows of one confusion-matrix cell, surest first."""
    found = np.flatnonzero((rows.labels == true) & (rows.predicted == predicted))
    return found[np.argsort(-rows.top_probabilities[found, 0], kind="stable")]


def class_probability(rows: Rows, index: int) -> np.ndarray:
    """Each row's probability of class `index` where it is among the row's best, else 0."""
    return np.where(rows.top_indices == index, rows.top_probabilities, 0).max(axis=1)


def top_per_class(rows: Rows, classes: Sequence[str], count: int = 10) -> list[np.ndarray]:
    """DIGITS' "Top N per category": per class, the rows the network is surest are of it."""
    result = []
    for index in range(len(classes)):
        probability = class_probability(rows, index)
        found = np.flatnonzero(probability > 0)
        result.append(found[np.argsort(-probability[found], kind="stable")][:count])
    return result


def confident_mistakes(rows: Rows, count: int = 24) -> np.ndarray:
    """Labelled rows predicted wrongly, the surest first: the likeliest mislabelled images."""
    wrong = np.flatnonzero((rows.labels >= 0) & (rows.predicted != rows.labels))
    return wrong[np.argsort(-rows.top_probabilities[wrong, 0], kind="stable")][:count]


def write_names(path: str | Path, items: Sequence[Item], shown: Callable[[str], str]) -> None:
    """Beside the rows: each image's real path (only these are ever served), the name it is
    shown by, and the label its source gave when the network does not know it."""
    data = {"paths": [item.path for item in items], "names": [shown(item.path) for item in items],
            "given": [item.given for item in items]}  # fmt: skip
    Path(path).write_text(json.dumps(data), encoding="utf-8")


def read_names(path: str | Path) -> dict[str, list[str]]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def records(rows: Rows, names: dict[str, list[str]], classes: Sequence[str]) -> Iterator[dict]:
    """Every row as the downloads give it: path, true label (as the source gave it when the
    network does not know it; empty without one), the top predictions with probabilities."""
    for i in range(len(rows)):
        label = int(rows.labels[i])
        yield {
            "path": names["names"][i],
            "true_label": classes[label] if label >= 0 else names["given"][i],
            "top": [
                {"label": classes[int(c)], "probability": round(float(p), 6)}
                for c, p in zip(rows.top_indices[i], rows.top_probabilities[i], strict=True)
            ],
        }


def csv_header(k: int = TOP_K) -> list[str]:
    return ["path", "true_label"] + [f"{what}_{n}" for n in range(1, k + 1) for what in ("label", "probability")]


def csv_row(record: dict) -> list:
    return [record["path"], record["true_label"]] + [
        v for top in record["top"] for v in (top["label"], top["probability"])
    ]
