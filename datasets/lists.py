"""Text-file lists in the DIGITS format, without Django.

A labels file names one class per line; line N (from 0) is class N.  A list names one image per
line as ``path label``: the path (spaces allowed; relative to a folder prefix or to the import
folders) and the class, by its number or its name.  Blank lines and lines starting with ``#``
are ignored; Windows line ends and a UTF-8 byte-order mark are fine.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from datasets.imaging import ImagingError

_LINE = re.compile(r"^(?P<path>.*\S)\s+(?P<label>\S+)$")


@dataclass
class Entry:
    line: int  # 1-based, as an editor shows it
    path: str  # as written in the list
    label: int


@dataclass
class ParsedList:
    entries: list[Entry] = field(default_factory=list)
    problems: list[tuple[int, str]] = field(default_factory=list)  # (line, what is wrong): unusable lines
    duplicates: list[tuple[int, str, str]] = field(default_factory=list)  # (line, path, why it is left out)


def decode_text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImagingError(
            f"The {name} is not UTF-8 text (byte 0x{data[exc.start]:02x} at position {exc.start}); save it as UTF-8."
        ) from None


def read_labels(data: bytes, name: str = "labels file") -> list[str]:
    """The class names of a labels file, in order."""
    labels: list[str] = []
    first_seen: dict[str, int] = {}
    for number, line in enumerate(decode_text(data, name).splitlines(), 1):
        label = line.strip()
        if not label:
            continue
        if label in first_seen:
            raise ImagingError(f"The {name} names class '{label}' twice (lines {first_seen[label]} and {number}).")
        first_seen[label] = number
        labels.append(label)
    if len(labels) < 2:
        raise ImagingError(f"The {name} must name at least two classes, one per line.")
    return labels


def parse_list(data: bytes, classes: list[str], name: str = "list") -> ParsedList:
    """The entries of a list; lines that cannot be used are problems, repeated paths duplicates."""
    by_name = {label: index for index, label in enumerate(classes)}
    parsed = ParsedList()
    first_line: dict[str, Entry] = {}
    for number, raw in enumerate(decode_text(data, name).splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            parsed.problems.append((number, f"expected “path label”, got “{_clip(line)}”"))
            continue
        path, label_text = match["path"], match["label"]
        label = _label_index(label_text, by_name, len(classes))
        if label is None:
            parsed.problems.append(
                (number, f"unknown class “{_clip(label_text)}” (classes are 0 to {len(classes) - 1} or their names)")
            )
            continue
        earlier = first_line.get(path)
        if earlier is not None:
            why = f"duplicate of line {earlier.line}"
            if earlier.label != label:
                why += f", which gives it class '{classes[earlier.label]}'"
            parsed.duplicates.append((number, path, why))
            continue
        entry = Entry(number, path, label)
        first_line[path] = entry
        parsed.entries.append(entry)
    if not parsed.entries and not parsed.problems:
        raise ImagingError(f"The {name} names no image.")
    return parsed


def _label_index(text: str, by_name: dict[str, int], count: int) -> int | None:
    if text in by_name:
        return by_name[text]
    if text.isdigit() and int(text) < count:
        return int(text)
    return None


def _clip(text: str, length: int = 60) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def locate(path: str, prefix: Path | None, roots: list[Path]) -> tuple[str | None, str]:
    """(the real path of a listed image, "") or (None, why it cannot be used).

    Relative paths are taken from the prefix, else from each import root in turn.  The path must
    lie under an import root once links are resolved, and be an existing regular file.
    """
    raw = Path(path)
    if raw.is_absolute():
        candidates = [raw]
    elif prefix is not None:
        candidates = [prefix / raw]
    else:
        candidates = [root / raw for root in roots]
    inside = [real for real in map(Path, map(os.path.realpath, candidates)) if _under(real, roots)]
    if not inside:
        return None, "outside the import folders"
    for real in inside:
        if real.is_file():
            return str(real), ""
    return None, "not a regular file" if any(real.exists() for real in inside) else "file not found"


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)
