"""What a dataset is built from, planned before any image is decoded: its classes and the
(path, label) items of each split, from class folders or from text-file lists.  No Django.

The form plans once to show mistakes before the job (strict: any unusable list line is an
error); the job plans again, since files may have changed since (lenient: such lines are
skipped and reported).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datasets.imaging import SPLITS, ImagingError, is_image_name, scan_class_folders, split_three_ways
from datasets.lists import ParsedList, locate

_MAX_STREAM = 0x3A  # keeps the per-class subsampling's random stream apart from the split's
_SHOWN_PROBLEMS = 5

Items = list[tuple[str, int]]


@dataclass
class Plan:
    classes: list[str]
    splits: dict[str, Items]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (entry, why) left out before decoding
    notes: list[str] = field(default_factory=list)  # for the build log

    def counts(self) -> dict[str, list[int]]:
        return {
            split: np.bincount([label for _, label in items], minlength=len(self.classes)).tolist()
            for split, items in self.splits.items()
        }

    @property
    def total(self) -> int:
        return sum(len(items) for items in self.splits.values())


class ListProblem(ImagingError):
    """Lines of one list that cannot be used; `split` says which list."""

    def __init__(self, split: str, message: str):
        super().__init__(message)
        self.split = split


# Looking at this many subfolders, and this many entries of each, tells a dataset's folder:
# class folders hold images from their first entries on.
MAX_CLASS_PROBES = 20
_ENTRIES_PROBED = 20


def dataset_folders(roots, *, max_depth: int = 3, limit: int = 200) -> list[str]:
    """Folders under ``roots`` that look like a dataset's folder: at least two of their
    subfolders hold images (the classes), as mnist/train/ does with its 0/ … 9/. The class
    folders themselves, and a parent of train/ and val/, are not among them: neither is what
    the form's folder fields take. Hidden folders are skipped; at most ``limit`` are returned."""
    found = []
    stack = [(Path(root), 0) for root in roots if Path(root).is_dir()]
    while stack and len(found) < limit:
        folder, depth = stack.pop()
        try:
            subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            continue
        if sum(1 for sub in subfolders[:MAX_CLASS_PROBES] if _holds_images(sub)) >= 2:
            found.append(str(folder))
            continue  # its subfolders are classes, not datasets
        if depth < max_depth:
            stack.extend((p, depth + 1) for p in reversed(subfolders[:50]))
    return sorted(found)


def _holds_images(folder: Path) -> bool:
    try:
        with os.scandir(folder) as entries:
            for _, entry in zip(range(_ENTRIES_PROBED), entries, strict=False):
                if is_image_name(entry.name) and entry.is_file():
                    return True
    except OSError:
        pass
    return False


def plan_folders(
    train_root: str | os.PathLike[str],
    *,
    val_root: str | os.PathLike[str] | None = None,
    test_root: str | os.PathLike[str] | None = None,
    val_percent: float = 0,
    test_percent: float = 0,
    seed: int = 0,
    min_per_class: int = 1,
    max_per_class: int | None = None,
) -> Plan:
    """Classes are the training folder's subfolders.  Validation and test images come from folders
    of their own with (some of) the same class subfolders, or are carved from training by percentage."""
    junk: list[tuple[str, str]] = []  # beside the images: hidden files, links, notes
    all_classes, items = scan_class_folders(train_root, junk)
    classes, items, notes = limit_per_class(all_classes, items, min_per_class, max_per_class, seed)
    held: dict[str, Items] = {}
    for split, root in (("val", val_root), ("test", test_root)):
        if root is not None:
            names, found = scan_class_folders(root, junk)
            unknown = [name for name in names if name not in all_classes]
            if unknown:
                raise ImagingError(
                    f"The {_PURPOSE[split]} folder has classes the training folder has not: {_listing(unknown)}."
                )
            held[split] = _relabel(split, [(path, names[label]) for path, label in found], classes, notes)
    # Shown as the build shows the files it could not read: from the folders' common parent.
    folders = [str(root) for root in (train_root, val_root, test_root) if root is not None]
    shown_from = os.path.commonpath(folders) if len(folders) > 1 else folders[0]
    skipped = sorted((os.path.relpath(path, shown_from), why) for path, why in junk)
    return _assemble(classes, items, held, val_percent, test_percent, seed, notes=notes, skipped=skipped)


def plan_lists(
    classes: list[str],
    lists: dict[str, ParsedList],
    *,
    list_names: dict[str, str],
    prefix: Path | None,
    roots: list[Path],
    val_percent: float = 0,
    test_percent: float = 0,
    seed: int = 0,
    min_per_class: int = 1,
    max_per_class: int | None = None,
    strict: bool = True,
) -> Plan:
    """Classes come from the labels file; lists has "train" and, optionally, "val" and "test"."""
    skipped: list[tuple[str, str]] = []
    located: dict[str, list[tuple[str, str]]] = {}
    for split, parsed in lists.items():
        name = list_names[split]
        problems = [(line, why, "") for line, why in parsed.problems]
        items = []
        for entry in parsed.entries:
            real, why = locate(entry.path, prefix, roots)
            if real is None:
                problems.append((entry.line, why, entry.path))
            else:
                items.append((real, classes[entry.label]))
        if strict and problems:
            raise ListProblem(split, _describe_problems(name, problems))
        skipped += [(path or f"{name} line {line}", f"{name} line {line}: {why}") for line, why, path in problems]
        skipped += [(path, f"{name} line {line}: {why}") for line, path, why in parsed.duplicates]
        located[split] = items

    label_of = {name: label for label, name in enumerate(classes)}
    train = [(path, label_of[name]) for path, name in located["train"]]
    kept, train, notes = limit_per_class(classes, train, min_per_class, max_per_class, seed)
    held = {split: _relabel(split, located[split], kept, notes) for split in ("val", "test") if split in located}
    return _assemble(kept, train, held, val_percent, test_percent, seed, notes=notes, skipped=skipped)


def plan_counts(
    class_counts: dict[str, int],
    *,
    val_percent: float = 0,
    test_percent: float = 0,
    seed: int = 0,
    min_per_class: int = 1,
    max_per_class: int | None = None,
) -> Plan:
    """The plan for classes known only by their image counts (an archive not yet extracted): enough
    to tell before the job whether the classes and splits can be made."""
    classes = sorted(class_counts)
    items = [(f"{name}/{i}", label) for label, name in enumerate(classes) for i in range(class_counts[name])]
    kept, items, notes = limit_per_class(classes, items, min_per_class, max_per_class, seed)
    return _assemble(kept, items, {}, val_percent, test_percent, seed, notes=notes)


def limit_per_class(
    classes: list[str], items: Items, min_count: int = 1, max_count: int | None = None, seed: int = 0
) -> tuple[list[str], Items, list[str]]:
    """Leave out classes with fewer than min_count items and keep a seeded random max_count of the
    larger ones.  Returns the classes kept, the items relabelled to them (in their order) and notes."""
    by_label: dict[int, list[int]] = defaultdict(list)
    for index, (_, label) in enumerate(items):
        by_label[label].append(index)
    kept_classes: list[str] = []
    new_label: dict[int, int] = {}
    chosen: set[int] = set()
    notes: list[str] = []
    for label, name in enumerate(classes):
        indexes = by_label.get(label, [])
        if len(indexes) < max(min_count, 1):
            notes.append(f"Class '{name}' left out: {_images(len(indexes))}, fewer than the minimum of {min_count}.")
            continue
        new_label[label] = len(kept_classes)
        kept_classes.append(name)
        if max_count is not None and len(indexes) > max_count:
            rng = np.random.default_rng([seed, _MAX_STREAM, label])
            picked = rng.choice(len(indexes), max_count, replace=False)
            notes.append(f"Class '{name}': {max_count} of its {len(indexes)} images used (the maximum per class).")
            indexes = [indexes[i] for i in picked]
        chosen.update(indexes)
    if len(kept_classes) < 2:
        at_least = f" with at least {_images(max(min_count, 1))}" if min_count > 1 else " with images"
        raise ImagingError(f"A dataset needs at least two classes{at_least}; found {len(kept_classes)}.")
    relabelled = [(path, new_label[label]) for index, (path, label) in enumerate(items) if index in chosen]
    return kept_classes, relabelled, notes


def _relabel(split: str, named_items: list[tuple[str, str]], classes: list[str], notes: list[str]) -> Items:
    """Items given with class names, as labels of `classes`; those of classes left out are dropped."""
    index = {name: label for label, name in enumerate(classes)}
    left_out: Counter[str] = Counter()
    items = []
    for path, name in named_items:
        if name in index:
            items.append((path, index[name]))
        else:
            left_out[name] += 1
    for name, count in sorted(left_out.items()):
        notes.append(f"{_PURPOSE[split].capitalize()}: {_images(count)} of class '{name}' left out with their class.")
    return items


def _assemble(
    classes: list[str],
    train: Items,
    held: dict[str, Items],
    val_percent: float,
    test_percent: float,
    seed: int,
    *,
    notes: list[str],
    skipped: list[tuple[str, str]] | None = None,
) -> Plan:
    # A split with a source of its own is not also carved from training.
    val_percent = 0 if "val" in held else val_percent
    test_percent = 0 if "test" in held else test_percent
    carved = split_three_ways(train, val_percent, test_percent, seed, classes=classes)
    splits = dict(zip(SPLITS, carved, strict=True))
    splits.update(held)
    return Plan(classes=classes, splits=splits, skipped=skipped or [], notes=notes)


_PURPOSE = {"train": "training", "val": "validation", "test": "test"}


def _images(count: int) -> str:
    return f"{count} image" if count == 1 else f"{count} images"


def _listing(names: list[str], shown: int = 10) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(f"'{name}'" for name in names[:shown]) + more


def _describe_problems(name: str, problems: list[tuple[int, str, str]]) -> str:
    shown = "; ".join(
        f"line {line}: {path + ': ' if path else ''}{why}" for line, why, path in sorted(problems)[:_SHOWN_PROBLEMS]
    )
    more = f"; and {len(problems) - _SHOWN_PROBLEMS} more" if len(problems) > _SHOWN_PROBLEMS else ""
    lines = "1 line" if len(problems) == 1 else f"{len(problems)} lines"
    return f"{lines} of the {name} cannot be used: {shown}{more}."
