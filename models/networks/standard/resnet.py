"""ResNet-20, the small residual network He et al. trained on CIFAR-10."""

from ..spec import to_yaml
from .common import SMALL_IMAGE, conv, is_small, layer

TITLE = "ResNet-20"
NATIVE_SHAPE = (32, 32, 3)

HEADER = f"""\
ResNet-20 (He et al., 2016, section 4.2): a 3x3 convolution, then three
stages of three residual blocks with 16, 32 and 64 features, then global
average pooling and one dense layer. Each block is conv-BN-ReLU-conv-BN
added to its input, then ReLU. The first block of stages 2 and 3 halves the
image with stride 2; its shortcut is a strided 1x1 convolution with batch
norm (the paper's option B), where CIFAR's original padded with zeros.

Images of {SMALL_IMAGE} pixels or more on the shorter side first go through
an ImageNet-style stem (7x7 convolution with stride 2, 3x3 max pool with
stride 2) to keep the cost in check. It works at any image size."""

STAGES = [(16, 1), (32, 2), (64, 2)]
BLOCKS_PER_STAGE = 3


def block(name: str, features: int, stride: int, project: bool) -> dict:
    spec = layer(
        "residual",
        name,
        layers=[
            conv(features, 3, stride=stride, use_bias=False),
            layer("batch_norm"),
            layer("relu"),
            conv(features, 3, use_bias=False),
            layer("batch_norm"),
        ],
    )
    if project:
        spec["shortcut"] = [conv(features, 1, stride=stride, use_bias=False), layer("batch_norm")]
    return spec


def spec_text(height: int, width: int) -> str:
    if is_small(height, width):
        stem = [conv(16, 3, "conv1", use_bias=False)]
    else:
        stem = [
            f"ImageNet-style stem for images of {SMALL_IMAGE} pixels or more; CIFAR's is one 3x3 convolution",
            conv(16, 7, "conv1", stride=2, use_bias=False),
        ]
    stem += [layer("batch_norm", "bn1"), layer("relu")]
    if not is_small(height, width):
        stem.append(layer("max_pool", "pool1", window=3, stride=2, padding="SAME"))
    blocks = []
    features_in = 16
    for stage, (features, stride) in enumerate(STAGES, start=1):
        for index in range(BLOCKS_PER_STAGE):
            first = index == 0
            project = first and (stride != 1 or features != features_in)
            blocks.append(block(f"stage{stage}_block{index + 1}", features, stride if first else 1, project))
        features_in = features
    return to_yaml(
        [*stem, *blocks, layer("global_avg_pool", "pool"), layer("dense", "fc", features="classes")],
        name=TITLE,
        header=HEADER,
    )
