"""Where user input may point, and how large an upload may grow: the rules the form checks
before the job and the job checks again (files change, and a job must not trust its row)."""

from pathlib import Path

from django.conf import settings

from datasets.archives import Limits
from datasets.imaging import ImagingError

MAX_LIST_BYTES = 50 << 20  # a list of a million images is about 40 MiB


def import_roots():
    return [Path(root).resolve() for root in settings.DATA_IMPORT_ROOTS]


def resolve_import_path(value, *, allowed=()):
    """The real path of a server path a user named, if it lies under an import root (or one of
    `allowed`, such as the dataset's own uploads).

    A relative path is taken relative to each import root in turn: the first root where it
    exists wins, and when it exists under none, the first root's is returned for the caller to
    report missing.  Symlinks are resolved before the check, so a link cannot lead outside the
    roots.
    """
    roots = import_roots()
    inside = roots + [Path(folder).resolve() for folder in allowed]
    raw = Path(str(value).strip()).expanduser()
    candidates = [raw] if raw.is_absolute() else [root / raw for root in roots]
    try:
        allowed_paths = [
            real
            for real in (candidate.resolve() for candidate in candidates)
            if any(real == root or real.is_relative_to(root) for root in inside)
        ]
        if allowed_paths:
            return next((real for real in allowed_paths if real.exists()), allowed_paths[0])
    except OSError as exc:  # a name longer than the filesystem takes, say
        raise ImagingError(f"This path cannot be used: {exc.strerror}.") from None
    shown = ", ".join(str(root) for root in roots) or "(none configured)"
    raise ImagingError(f"This path is outside the import folders. Allowed: {shown}.")


def archive_limits():
    """The archive limits, which an installation may change in its settings."""
    defaults = Limits()
    return Limits(
        max_entries=getattr(settings, "DATASET_ARCHIVE_MAX_ENTRIES", defaults.max_entries),
        max_bytes=getattr(settings, "DATASET_ARCHIVE_MAX_BYTES", defaults.max_bytes),
        max_ratio=getattr(settings, "DATASET_ARCHIVE_MAX_RATIO", defaults.max_ratio),
    )


def read_list_file(path, words):
    """The bytes of a list or labels file on the server, refusing what cannot be one."""
    if not path.is_file():
        raise ImagingError(f"There is no file at {path}.")
    if path.stat().st_size > MAX_LIST_BYTES:
        raise ImagingError(f"The {words} is larger than {MAX_LIST_BYTES >> 20} MiB.")
    return path.read_bytes()
