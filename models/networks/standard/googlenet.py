"""GoogLeNet as NVIDIA DIGITS shipped it (Caffe's bvlc_googlenet), sized to any image."""

from ..spec import to_yaml
from .common import SMALL_IMAGE, conv, is_small, layer

TITLE = "GoogLeNet"
NATIVE_SHAPE = (224, 224, 3)

HEADER = f"""\
GoogLeNet (Szegedy et al., 2014) as NVIDIA DIGITS shipped it: the full
network of nine inception modules with the paper's widths (its table 1).
Each inception module runs four branches side by side (1x1; 1x1 then 3x3;
1x1 then 5x5; 3x3 max pool then 1x1) and concatenates their channels.

Changes:
- The two auxiliary classifiers (loss1, loss2) are left out: they only
  helped the original train, and this platform trains one loss.
- Images under {SMALL_IMAGE} pixels on the shorter side get a 3x3, stride-1
  conv1 and no pool1, so that 28x28 or 32x32 images still have a 4x4 map
  at inception 5b. Larger images get the original 7x7, stride-2 conv1.
- Global average pooling replaces the final 7x7 average pool, which is the
  same at 224x224 and fits any other size.
Images must be at least 17x17 pixels."""

# name, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection
INCEPTION = {
    "3": [("inception_3a", 64, 96, 128, 16, 32, 32), ("inception_3b", 128, 128, 192, 32, 96, 64)],
    "4": [
        ("inception_4a", 192, 96, 208, 16, 48, 64),
        ("inception_4b", 160, 112, 224, 24, 64, 64),
        ("inception_4c", 128, 128, 256, 24, 64, 64),
        ("inception_4d", 112, 144, 288, 32, 64, 64),
        ("inception_4e", 256, 160, 320, 32, 128, 128),
    ],
    "5": [("inception_5a", 256, 160, 320, 32, 128, 128), ("inception_5b", 384, 192, 384, 48, 128, 128)],
}


def inception(name, n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj) -> dict:
    return layer(
        "branches",
        name,
        branches=[
            [conv(n1x1, 1, activation="relu")],
            [conv(n3x3_reduce, 1, activation="relu"), conv(n3x3, 3, activation="relu")],
            [conv(n5x5_reduce, 1, activation="relu"), conv(n5x5, 5, activation="relu")],
            [layer("max_pool", window=3, stride=1, padding="SAME"), conv(pool_proj, 1, activation="relu")],
        ],
    )


def spec_text(height: int, width: int) -> str:
    if is_small(height, width):
        stem = [
            f"conv1 for small images (under {SMALL_IMAGE} pixels), and no pool1;",
            "the original is 7x7 with stride 2, then a 3x3 max pool with stride 2",
            conv(64, 3, "conv1", activation="relu"),
        ]
    else:
        stem = [
            conv(64, 7, "conv1", stride=2, activation="relu"),
            layer("max_pool", "pool1", window=3, stride=2, padding="SAME"),
        ]
    return to_yaml(
        [
            *stem,
            layer("local_response_norm", "norm1", size=5, alpha=0.0001, beta=0.75),
            conv(64, 1, "conv2_reduce", activation="relu"),
            conv(192, 3, "conv2", activation="relu"),
            layer("local_response_norm", "norm2", size=5, alpha=0.0001, beta=0.75),
            layer("max_pool", "pool2", window=3, stride=2, padding="SAME"),
            *[inception(*row) for row in INCEPTION["3"]],
            layer("max_pool", "pool3", window=3, stride=2, padding="SAME"),
            *[inception(*row) for row in INCEPTION["4"]],
            layer("max_pool", "pool4", window=3, stride=2, padding="SAME"),
            *[inception(*row) for row in INCEPTION["5"]],
            layer("global_avg_pool", "pool5"),
            layer("dropout", "drop5", rate=0.4),
            layer("dense", "classifier", features="classes"),
        ],
        name=TITLE,
        header=HEADER,
    )
