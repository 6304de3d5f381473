"""AlexNet as NVIDIA DIGITS shipped it (Caffe's bvlc_alexnet), sized to any image."""

from ..spec import to_yaml
from .common import SMALL_IMAGE, conv, is_small, layer

TITLE = "AlexNet"
NATIVE_SHAPE = (224, 224, 3)

HEADER = f"""\
AlexNet (Krizhevsky et al., 2012) as NVIDIA DIGITS shipped it: five
convolutions (conv2, conv4 and conv5 split in two groups, as on the
original two GPUs), local response normalization, three max pools, and
three dense layers with dropout: 61 million parameters for 1000 classes.

Changes so that it fits any image size:
- Images under {SMALL_IMAGE} pixels on the shorter side get a 5x5, stride-1
  conv1 instead of 11x11 with stride 4, so 28x28 or 32x32 images survive
  the three pools. Larger images get the original.
- pool5 is followed by an adaptive average pool to 6x6 (as in torchvision's
  AlexNet), so fc6 always has its 9216 inputs. At 224x224 the grid is
  already 6x6 and this changes nothing.
Images must be at least 15x15 pixels."""


def spec_text(height: int, width: int) -> str:
    if is_small(height, width):
        stem = [
            f"conv1 for small images (under {SMALL_IMAGE} pixels); the original is 11x11, stride 4",
            conv(96, 5, "conv1", activation="relu"),
        ]
    else:
        stem = [conv(96, 11, "conv1", stride=4, padding=2, activation="relu")]
    return to_yaml(
        [
            *stem,
            layer("local_response_norm", "norm1", size=5, alpha=0.0001, beta=0.75),
            layer("max_pool", "pool1", window=3, stride=2),
            conv(256, 5, "conv2", groups=2, activation="relu"),
            layer("local_response_norm", "norm2", size=5, alpha=0.0001, beta=0.75),
            layer("max_pool", "pool2", window=3, stride=2),
            conv(384, 3, "conv3", activation="relu"),
            conv(384, 3, "conv4", groups=2, activation="relu"),
            conv(256, 3, "conv5", groups=2, activation="relu"),
            layer("max_pool", "pool5", window=3, stride=2),
            layer("adaptive_avg_pool", "pool5_6x6", size=6),
            layer("flatten"),
            layer("dense", "fc6", features=4096, activation="relu"),
            layer("dropout", "drop6", rate=0.5),
            layer("dense", "fc7", features=4096, activation="relu"),
            layer("dropout", "drop7", rate=0.5),
            layer("dense", "fc8", features="classes"),
        ],
        name=TITLE,
        header=HEADER,
    )
