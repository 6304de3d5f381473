"""Archives of class folders uploaded from the browser (.zip, .tar.gz, .tgz, .tar.bz2, .tar.xz,
.tar), inspected in full before anything is written, then extracted into a folder of their own.
No Django.

Refused, each with its reason: a file that is not such an archive whatever its name; entries
with an absolute path or a `..`; links, devices and other entries that are not plain files or
folders; encrypted entries; more entries, more uncompressed bytes or a higher compression ratio
than the limits; two entries with one name.  Only image files inside a class folder are
extracted; the rest (a README, __MACOSX/, .DS_Store) is ignored and counted.

Layout: one folder per class, `cats/1.jpg`, optionally inside one enclosing folder
(`pets/cats/1.jpg`), as zipping a folder usually makes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from datasets.imaging import ImagingError, is_image_name

_COPY_CHUNK = 1 << 20
# Below this many bytes a high compression ratio is harmless (a few flat bitmaps), so not refused.
_RATIO_FLOOR = 8 << 20
_NAME_BYTES = 255  # the longest file name Linux file systems take
_ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError, ValueError)


class ArchiveError(ImagingError):
    """The archive cannot be used; the message says why, in the user's words."""


@dataclass(frozen=True)
class Limits:
    max_entries: int = 50_000
    max_bytes: int = 4 << 30  # uncompressed, all entries together
    max_ratio: float = 100.0  # uncompressed / compressed, of the whole archive and of any one entry


@dataclass
class Member:
    name: str  # as stored in the archive
    parts: tuple[str, ...]  # where it is extracted, relative to the destination: (class, ..., file)
    size: int


@dataclass
class Inspection:
    kind: str  # "zip" or "tar"
    members: list[Member] = field(default_factory=list)  # the images to extract, in archive order
    uncompressed_bytes: int = 0
    ignored: int = 0  # files not extracted: not an image, hidden, or outside any class folder

    @property
    def class_counts(self) -> dict[str, int]:
        return dict(Counter(member.parts[0] for member in self.members))


def inspect_archive(source: str | os.PathLike[str] | BinaryIO, limits: Limits = Limits()) -> Inspection:
    """Check every entry of the archive (a path or a seekable binary file) against the rules and
    limits, writing nothing."""
    with _binary(source) as stream:
        return _inspect(stream, limits)


def _inspect(stream: BinaryIO, limits: Limits) -> Inspection:
    compressed = stream.seek(0, os.SEEK_END)
    kind = _kind(stream)
    entries = _zip_entries(stream, limits) if kind == "zip" else _tar_entries(stream, limits)
    inspection = Inspection(kind=kind)
    files: list[Member] = []
    seen: set[tuple[str, ...]] = set()
    for count, (name, kind_of_entry, size, packed) in enumerate(entries, 1):
        if count > limits.max_entries:
            raise ArchiveError(f"The archive has more than {limits.max_entries:,} entries, the limit.")
        parts = _safe_parts(name)
        if kind_of_entry == "dir":
            continue
        inspection.uncompressed_bytes += size
        if inspection.uncompressed_bytes > limits.max_bytes:
            raise ArchiveError(f"The archive holds more than {_size(limits.max_bytes)} once uncompressed, the limit.")
        # Checked as it grows, so that listing a tar bomb stops early: the whole file's size
        # bounds what the entries so far were compressed to.
        total = inspection.uncompressed_bytes
        if total > _RATIO_FLOOR and total > limits.max_ratio * max(compressed, 1):
            raise _bomb(total / max(compressed, 1), limits, "The archive")
        if size > _RATIO_FLOOR and packed is not None and size > limits.max_ratio * max(packed, 1):
            raise _bomb(size / max(packed, 1), limits, f"Entry “{name}”")
        if parts in seen:
            raise ArchiveError(f"The archive has two entries named “{name}”.")
        seen.add(parts)
        files.append(Member(name, parts, size))
    parents = {member.parts[:i] for member in files for i in range(1, len(member.parts))}
    clash = next((member for member in files if member.parts in parents), None)
    if clash is not None:
        raise ArchiveError(f"The archive has “{clash.name}” both as a file and as a folder.")

    depth = _enclosing_depth([m.parts for m in files if _is_wanted(m.parts)])
    for member in files:
        parts = member.parts[depth:]
        if _is_wanted(member.parts) and len(parts) >= 2:
            inspection.members.append(Member(member.name, parts, member.size))
        else:
            inspection.ignored += 1
    return inspection


def extract_archive(
    path: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    limits: Limits = Limits(),
    progress: Callable[[int, int], object] | None = None,
) -> Inspection:
    """Inspect, then extract the images of the archive into destination, which must not exist.

    Nothing is written unless the whole archive passes; a failure part-way removes destination.
    """
    inspection = inspect_archive(path, limits)  # the same rules, again: never extract unchecked
    destination = Path(destination)
    free = shutil.disk_usage(destination.parent).free
    if inspection.uncompressed_bytes > free * 0.9:
        raise ArchiveError(
            f"Not enough disk space to extract the archive: it needs {_size(inspection.uncompressed_bytes)}, "
            f"{_size(free)} are free."
        )
    destination.mkdir()
    wanted = {member.name: member for member in inspection.members}
    done = 0
    try:
        with contextlib.closing(_open_members(Path(path), inspection.kind, wanted)) as streams:
            for name, stream in streams:
                member = wanted[name]
                target = destination.joinpath(*member.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with stream, open(target, "xb") as out:
                    _copy_at_most(stream, out, member.size, name)
                done += 1
                if progress is not None:
                    progress(done, len(wanted))
    except ArchiveError:
        shutil.rmtree(destination, ignore_errors=True)
        raise
    except (*_TAR_ERRORS, zipfile.BadZipFile, NotImplementedError) as exc:
        shutil.rmtree(destination, ignore_errors=True)
        raise ArchiveError(f"The archive is damaged: {exc}") from exc
    except BaseException:
        shutil.rmtree(destination, ignore_errors=True)
        raise
    return inspection


# --- Reading either kind of archive ---------------------------------------------------------------


@contextlib.contextmanager
def _binary(source: str | os.PathLike[str] | BinaryIO) -> Iterator[BinaryIO]:
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as stream:
            yield stream
    else:
        yield source  # the caller's to close


def _kind(stream: BinaryIO) -> str:
    try:
        stream.seek(0)
        if zipfile.is_zipfile(stream):
            return "zip"
        stream.seek(0)
        if tarfile.is_tarfile(stream):
            return "tar"
    except _TAR_ERRORS:
        pass
    raise ArchiveError("This file is not a .zip or .tar.gz archive (whatever its name says).")


def _zip_entries(stream: BinaryIO, limits: Limits) -> Iterator[tuple[str, str, int, int | None]]:
    """(name, "file" or "dir", uncompressed size, compressed size) of each entry."""
    try:
        stream.seek(0)
        with zipfile.ZipFile(stream) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ArchiveError(f"The zip archive is damaged: {exc}") from exc
    if len(infos) > limits.max_entries:
        raise ArchiveError(f"The archive has {len(infos):,} entries; the limit is {limits.max_entries:,}.")
    for info in infos:
        # Unix zip tools keep the file type in the high bits; many writers leave it 0 for a file.
        file_type = stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0
        if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
            what = "a symbolic link" if file_type == stat.S_IFLNK else "not a plain file"
            raise ArchiveError(f"Entry “{info.filename}” is {what}; archives may hold only files and folders.")
        if info.is_dir():
            yield info.filename, "dir", 0, None
            continue
        if info.flag_bits & 0x1:
            raise ArchiveError(f"Entry “{info.filename}” is encrypted; upload an archive without a password.")
        if info.compress_type not in _ZIP_METHODS:
            raise ArchiveError(f"Entry “{info.filename}” uses a compression method this platform cannot read.")
        yield info.filename, "file", info.file_size, info.compress_size


def _tar_entries(stream: BinaryIO, limits: Limits) -> Iterator[tuple[str, str, int, int | None]]:
    # Streaming ("r|*"): listing a compressed tar means decompressing it, and the caller stops
    # at the first entry over a limit, so the work done for a bomb stays bounded by the limits.
    try:
        stream.seek(0)
        with tarfile.open(fileobj=stream, mode="r|*") as archive:
            for member in archive:
                if member.issym() or member.islnk():
                    raise ArchiveError(f"Entry “{member.name}” is a link; archives may hold only files and folders.")
                if not (member.isfile() or member.isdir()):
                    raise ArchiveError(
                        f"Entry “{member.name}” is not a plain file; archives may hold only files and folders."
                    )
                yield member.name, "dir" if member.isdir() else "file", member.size, None
    except ArchiveError:
        raise
    except _TAR_ERRORS as exc:
        raise ArchiveError(f"The tar archive is damaged: {exc}") from exc


def _open_members(path: Path, kind: str, wanted: dict[str, Member]) -> Iterator[tuple[str, BinaryIO]]:
    if kind == "zip":
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.filename in wanted:
                    yield info.filename, archive.open(info)
    else:
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                if member.name in wanted and member.isfile():
                    yield member.name, archive.extractfile(member)


def _copy_at_most(source: BinaryIO, target: BinaryIO, size: int, name: str) -> None:
    # The entry said how large it is; a stream that goes on beyond that is lying.
    left = size
    while chunk := source.read(min(_COPY_CHUNK, left + 1)):
        left -= len(chunk)
        if left < 0:
            raise ArchiveError(f"Entry “{name}” is larger than the archive says.")
        target.write(chunk)


# --- Names ------------------------------------------------------------------------------------------


def _safe_parts(name: str) -> tuple[str, ...]:
    """The path components of an entry name, refusing any that would land outside the destination."""
    if "\x00" in name:
        raise ArchiveError(f"Entry “{name!r}” has a NUL byte in its name.")
    # Zip tools on Windows sometimes write backslashes; read them as separators so that a
    # "..\\" cannot slip through as part of a name.
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or re.match(r"^[A-Za-z]:", normalized):
        raise ArchiveError(f"Entry “{name}” has an absolute path; archives may hold only relative paths.")
    parts = tuple(part for part in normalized.split("/") if part not in ("", "."))
    if ".." in parts:
        raise ArchiveError(f"Entry “{name}” points outside the archive (“..” in its path).")
    if not parts:
        raise ArchiveError(f"Entry “{name}” has an empty name.")
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > _NAME_BYTES:
            raise ArchiveError(f"Entry “{name}” has a name longer than {_NAME_BYTES} bytes.")
    return parts


def _is_wanted(parts: tuple[str, ...]) -> bool:
    return is_image_name(parts[-1]) and not any(part.startswith(".") or part == "__MACOSX" for part in parts)


def _enclosing_depth(paths: list[tuple[str, ...]]) -> int:
    """How many enclosing folders all images share above their class folders (pets/cats/1.jpg: 1)."""
    depth = 0
    while paths and all(len(p) > depth + 2 for p in paths) and len({p[depth] for p in paths}) == 1:
        depth += 1
    return depth


def _bomb(ratio: float, limits: Limits, what: str) -> ArchiveError:
    return ArchiveError(
        f"{what} expands {ratio:,.0f} times (limit {limits.max_ratio:,.0f}): this looks like a compression bomb."
    )


def _size(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:,.0f} {unit}" if unit == "bytes" else f"{count:,.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")
