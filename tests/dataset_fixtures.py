"""Small real inputs for the dataset tests: tiny color images drawn here, archives built
from them (good ones and hostile ones), and folders under the import root.

Import the fixtures into a test module with `from tests.dataset_fixtures import *`.
"""

import io
import shutil
import stat
import tarfile
import uuid
import zipfile

import numpy as np
import pytest
from PIL import Image, ImageDraw

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220)}

__all__ = [
    "COLORS",
    "empty_data_root",
    "color_folder",
    "color_image",
    "color_tree",
    "fresh_folder",
    "png_bytes",
    "tar_of",
    "write_tree",
    "zip_of",
]


def color_image(color, size, seed=0, format="PNG"):
    """A shape of one color on a noisy gray background, as encoded bytes."""
    rng = np.random.default_rng(seed)
    background = rng.integers(90, 160, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse([w * 0.2, h * 0.2, w * 0.8, h * 0.8], fill=COLORS[color])
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def color_tree(per_class=6, prefix=""):
    """{relative path: bytes} of class folders red/green/blue, in assorted sizes and aspect ratios."""
    sizes = [(40, 30), (30, 40), (32, 32), (64, 20), (20, 50), (48, 36), (24, 24), (50, 40)]
    files = {}
    for c, color in enumerate(COLORS):
        for i in range(per_class):
            fmt = "JPEG" if i % 3 == 2 else "PNG"
            name = f"{prefix}{color}/{i:03d}.{'jpg' if fmt == 'JPEG' else 'png'}"
            files[name] = color_image(color, sizes[(i + c) % len(sizes)], seed=10 * c + i, format=fmt)
    return files


def png_bytes(value=128, size=(8, 8), mode="L"):
    buffer = io.BytesIO()
    Image.new(mode, size, value).save(buffer, format="PNG")
    return buffer.getvalue()


def write_tree(root, files):
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def zip_of(files, *, symlinks=(), method=zipfile.ZIP_DEFLATED):
    """A zip archive's bytes; symlinks is [(name, target)] stored as Unix links."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
        for name, target in symlinks:
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def tar_of(files, *, mode="w:gz", links=()):
    """A tar archive's bytes; links is [(name, target)] stored as symbolic links."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return buffer.getvalue()


@pytest.fixture
def empty_data_root(settings):
    """No dataset files before or after the test.  Tests rolled back in a transaction reuse
    primary keys, so files left behind would be found by a later dataset with the same id."""

    def empty():
        for name in ("datasets", "uploads"):
            shutil.rmtree(settings.DATA_ROOT / name, ignore_errors=True)

    empty()
    yield
    empty()


@pytest.fixture
def fresh_folder(settings):
    """A new, empty folder under the import root, removed afterwards."""
    made = []

    def make(name="src"):
        folder = settings.DATA_IMPORT_ROOTS[0] / f"{name}-{uuid.uuid4().hex[:6]}"
        folder.mkdir(parents=True)
        made.append(folder)
        return folder

    yield make
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def color_folder(fresh_folder):
    """Class folders red/green/blue of 6 tiny color images each, under the import root."""
    return write_tree(fresh_folder("colors"), color_tree())
