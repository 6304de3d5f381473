"""LeNet as NVIDIA DIGITS shipped it for MNIST-style classification."""

from ..spec import to_yaml
from .common import conv, layer

TITLE = "LeNet"
NATIVE_SHAPE = (28, 28, 1)

HEADER = """\
LeNet, as NVIDIA DIGITS shipped it for MNIST (Caffe's lenet_train_test):
two unpadded 5x5 convolutions, each followed by 2x2 max pooling, then a
500-unit hidden layer. There is no activation after the convolutions, as
in Caffe. Images must be at least 16x16 pixels; ip1's inputs grow with the
image (800 at 28x28, for 431,080 parameters with 10 classes)."""


def spec_text(height: int, width: int) -> str:
    return to_yaml(
        [
            conv(20, 5, "conv1", padding="VALID"),
            layer("max_pool", "pool1", window=2),
            conv(50, 5, "conv2", padding="VALID"),
            layer("max_pool", "pool2", window=2),
            layer("flatten"),
            layer("dense", "ip1", features=500, activation="relu"),
            layer("dense", "ip2", features="classes"),
        ],
        name=TITLE,
        header=HEADER,
    )
