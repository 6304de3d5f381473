"""Exports of a trained LeNet: ONNX run by onnxruntime and StableHLO run by jax.export
agree with the platform on real MNIST digits, and the README's own sample classifies an
image in a process that cannot import the platform."""

import os
import re
import subprocess
import sys
import zipfile
from io import BytesIO

import numpy as np
import pytest
from PIL import Image


def _digits(folder, per_class):
    images, labels = [], []
    for label in range(10):
        for path in sorted((folder / str(label)).glob("*.png"))[:per_class]:
            images.append(np.asarray(Image.open(path).convert("L"), np.uint8)[..., None])
            labels.append(label)
    return np.stack(images), np.array(labels, np.int32)


@pytest.fixture(scope="module")
def trained(mnist_root_module):
    from training import engine

    train_x, train_y = _digits(mnist_root_module / "train", 60)
    test_x, _ = _digits(mnist_root_module / "test", 12)
    mean = train_x.astype(np.float32).mean(axis=0)
    data = engine.ArrayData(train_x, train_y, test_x[:0], np.zeros(0, np.int32), mean, 10)
    augmentation = engine.Augmentation(use_mean="image")
    config = engine.TrainConfig(epochs=2, batch_size=32, learning_rate=0.05, augmentation=augmentation)
    model = engine.fit(data, config).model
    return model, mean, augmentation, test_x


@pytest.fixture(scope="module")
def mnist_root_module(tmp_path_factory):
    root = tmp_path_factory.mktemp("imports")
    cache = os.environ.get("MNIST_CACHE_DIR", str(ROOT / "var" / "cache"))
    subprocess.run(
        [sys.executable, "-m", "datasets.mnist_sample", str(root), "--limit", "200"],
        check=True,
        cwd=ROOT,
        env={**os.environ, "MNIST_CACHE_DIR": cache},
    )
    return root / "mnist"


ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
PREPROCESSING = {
    "width": 28,
    "height": 28,
    "channels": 1,
    "resize_mode": "squash",
    "resize_help": "resized to exactly that size",
    "inside": "the mean image is subtracted, then pixels are divided by 255",
}


@pytest.mark.parametrize("fmt", ["onnx", "stablehlo"])
def test_an_export_agrees_with_the_platform_and_its_readme_sample_runs_alone(trained, fmt, tmp_path):
    from training import engine, export_formats

    model, mean, augmentation, images = trained
    assert len(images) >= 100
    classify = export_formats.classify_function(model, mean, augmentation)
    data = export_formats.export(fmt, classify, images.shape[1:], images[:8])

    platform = engine.predict(model, images, mean, augmentation)
    run = export_formats.run_onnx if fmt == "onnx" else export_formats.run_stablehlo
    exported = run(data, images.astype(np.float32))
    np.testing.assert_array_equal(exported.argmax(axis=1), platform.argmax(axis=1))
    np.testing.assert_allclose(exported, platform, atol=1e-4)

    labels = [f"digit {i}" for i in range(10)]
    archive = export_formats.archive(fmt, data, labels=labels, preprocessing=PREPROCESSING, info={})
    folder = tmp_path / "export"
    zipfile.ZipFile(BytesIO(archive)).extractall(folder)
    readme = (folder / "README.md").read_text()
    sample = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    (folder / "readme_sample.py").write_text(sample)
    Image.fromarray(images[37][..., 0]).save(folder / "digit.png")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-I", "readme_sample.py", "digit.png"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    label, probability = out.stdout.split("\n")[-2].rsplit(" ", 1)
    assert label == labels[int(platform[37].argmax())]
    assert float(probability) == pytest.approx(float(platform[37].max()), abs=1e-4)


def test_the_sample_process_cannot_import_the_platform(tmp_path):
    # The check above is only honest if the sample could not have used the platform's code.
    out = subprocess.run(
        [sys.executable, "-I", "-c", "import training"], cwd=tmp_path, env={"PATH": os.environ["PATH"]},
        capture_output=True, text=True,
    )  # fmt: skip
    assert "ModuleNotFoundError" in out.stderr


def test_a_network_onnx_cannot_hold_fails_with_the_reason_and_still_exports_as_stablehlo():
    # jax2onnx 0.17.1 converts ResNet-20, but gets the shapes of a residual addition wrong:
    # onnxruntime refuses the file. The export says so instead of handing out a broken file.
    from flax import nnx

    from models.networks import build_network
    from training import config, engine, export_formats

    model = build_network("resnet", (32, 32, 3), 10, rngs=nnx.Rngs(0))
    classify = export_formats.classify_function(model, None, engine.Augmentation(use_mean="none"))
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    with pytest.raises(export_formats.ExportError, match="onnxruntime rejects the result: .*Add"):
        export_formats.export("onnx", classify, (32, 32, 3), images)
    assert export_formats.export("stablehlo", classify, (32, 32, 3), images)
    # What the experiment page says in place of the ONNX action, as this test found it.
    assert "onnxruntime rejects the file" in config.export_problem("resnet", "onnx")
    assert config.export_problem("resnet", "stablehlo") is None
