"""A trained network as a file other programs run: ONNX (through jax2onnx) or a
serialized StableHLO module (jax.export). Pure JAX; nothing here knows Django.

The exported function takes what a person has at hand, pixel values 0-255 as float32
in (N, height, width, channels) at the dataset's image size, and returns the class
probabilities (N, classes). The platform's own preprocessing is inside it: the mean
subtraction (the mean is a constant of the function), the scaling by 1/255 and the
centre crop. Only the resize to the dataset's size stays outside, described in
preprocessing.json and the README of the archive.

Every export is checked before it is handed out: the file is run (onnxruntime, or
jax.export.deserialize) on the images given and must agree with the platform's own
prediction to within TOLERANCE.
"""

from __future__ import annotations

import io
import json
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from training import augment
from training.config import EXPORT_FORMATS as FORMATS

TOLERANCE = 1e-4
MODEL_FILES = {"onnx": "model.onnx", "stablehlo": "model.stablehlo"}


class ExportError(ValueError):
    """The network cannot be exported to this format; the message says why, for people."""


def classify_function(model: nnx.Module, mean: np.ndarray | None, augmentation: augment.Augmentation):
    """images (N, H, W, C) float32 0-255 -> probabilities, exactly as engine.predict."""
    graphdef, state = nnx.split(model)
    mean = augment.resolve_mean(augmentation, mean)
    mean = None if mean is None else jnp.asarray(mean, jnp.float32)

    def classify(images):
        x = augment.eval_transform(augmentation, images, mean)
        return jax.nn.softmax(nnx.merge(graphdef, state)(x))

    return classify


def to_onnx(classify, image_shape) -> bytes:
    from jax2onnx import to_onnx as convert

    try:
        proto = convert(classify, [("N", *image_shape)], input_names=["images"], output_names=["probabilities"])
    except Exception as exc:  # jax2onnx raises whatever its plugins raise
        raise ExportError(f"jax2onnx cannot convert this network: {type(exc).__name__}: {exc}") from None
    return proto.SerializeToString()


def run_onnx(data: bytes, images: np.ndarray) -> np.ndarray:
    import onnxruntime

    try:
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        return session.run(None, {"images": np.asarray(images, np.float32)})[0]
    except Exception as exc:  # onnxruntime's errors are its own classes, one per cause
        raise ExportError(
            f"jax2onnx converted the network, but onnxruntime rejects the result: {str(exc).strip()}"
        ) from None


def to_stablehlo(classify, image_shape) -> bytes:
    (n,) = jax.export.symbolic_shape("n")
    spec = jax.ShapeDtypeStruct((n, *image_shape), jnp.float32)
    try:
        return bytes(jax.export.export(jax.jit(classify))(spec).serialize())
    except Exception as exc:
        raise ExportError(f"jax.export cannot export this network: {type(exc).__name__}: {exc}") from None


def run_stablehlo(data: bytes, images: np.ndarray) -> np.ndarray:
    return np.asarray(jax.export.deserialize(bytearray(data)).call(np.asarray(images, np.float32)))


def export(fmt: str, classify, image_shape, check_images: np.ndarray) -> bytes:
    """The model file in ``fmt``, checked against ``classify`` on ``check_images`` (uint8
    or float 0-255, at ``image_shape``)."""
    if fmt not in FORMATS:
        raise ExportError(f'Unknown export format "{fmt}". Available: {", ".join(FORMATS)}.')
    data = to_onnx(classify, image_shape) if fmt == "onnx" else to_stablehlo(classify, image_shape)
    images = np.asarray(check_images, np.float32)
    got = run_onnx(data, images) if fmt == "onnx" else run_stablehlo(data, images)
    want = np.asarray(classify(images))
    difference = float(np.max(np.abs(got - want)))
    if not difference <= TOLERANCE:
        raise ExportError(
            f"The {FORMATS[fmt]} file gives other probabilities than the platform (by up to {difference:.2g}); "
            "it was not kept."
        )
    return data


def archive(fmt: str, data: bytes, *, labels, preprocessing: dict, info: dict) -> bytes:
    """The zip a person downloads: the model, labels.txt, preprocessing.json, README.md
    and classify.py (the README's sample)."""
    sample = SAMPLES[fmt]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MODEL_FILES[fmt], data)
        zf.writestr("labels.txt", "\n".join(labels) + "\n")
        zf.writestr("preprocessing.json", json.dumps(preprocessing, indent=2))
        zf.writestr("info.json", json.dumps(info, indent=2))
        zf.writestr("classify.py", sample)
        zf.writestr("README.md", readme(fmt, preprocessing, sample))
    return buffer.getvalue()


def readme(fmt: str, preprocessing: dict, sample: str) -> str:
    height, width, channels = preprocessing["height"], preprocessing["width"], preprocessing["channels"]
    needs = "onnxruntime numpy pillow" if fmt == "onnx" else "jax numpy pillow"
    return f"""# {FORMATS[fmt]} export

`{MODEL_FILES[fmt]}` classifies images into the classes of `labels.txt` (line i is output i).

Input: `images`, float32 pixel values 0-255, shape (N, {height}, {width}, {channels}) (N images,
height, width, {"gray" if channels == 1 else "RGB"} channels last), any N. Output: the class
probabilities, shape (N, {len(preprocessing.get("labels", [])) or "classes"}).

Preprocessing inside the model: {preprocessing["inside"]}.
Preprocessing left to you: resize each image to {width}x{height} as the dataset was built
(resize mode "{preprocessing["resize_mode"]}": {preprocessing["resize_help"]}), and convert it to
{"grayscale" if channels == 1 else "RGB"}.

Sample (`pip install {needs}`; run in this folder: `python classify.py image.png`):

```python
{sample.rstrip()}
```
"""


ONNX_SAMPLE = """import json
import sys

import numpy as np
import onnxruntime
from PIL import Image

preprocessing = json.load(open("preprocessing.json"))
labels = open("labels.txt").read().splitlines()
height, width, channels = preprocessing["height"], preprocessing["width"], preprocessing["channels"]

image = Image.open(sys.argv[1]).convert("L" if channels == 1 else "RGB").resize((width, height))
images = np.asarray(image, np.float32).reshape(1, height, width, channels)

session = onnxruntime.InferenceSession("model.onnx")
probabilities = session.run(None, {"images": images})[0][0]
best = int(probabilities.argmax())
print(labels[best], float(probabilities[best]))
"""

STABLEHLO_SAMPLE = """import json
import sys

import jax
import numpy as np
from PIL import Image

preprocessing = json.load(open("preprocessing.json"))
labels = open("labels.txt").read().splitlines()
height, width, channels = preprocessing["height"], preprocessing["width"], preprocessing["channels"]

image = Image.open(sys.argv[1]).convert("L" if channels == 1 else "RGB").resize((width, height))
images = np.asarray(image, np.float32).reshape(1, height, width, channels)

with open("model.stablehlo", "rb") as f:
    classify = jax.export.deserialize(bytearray(f.read()))
probabilities = np.asarray(classify.call(images))[0]
best = int(probabilities.argmax())
print(labels[best], float(probabilities[best]))
"""

SAMPLES = {"onnx": ONNX_SAMPLE, "stablehlo": STABLEHLO_SAMPLE}
