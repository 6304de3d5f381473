"""LeNet as NVIDIA DIGITS shipped it for MNIST-style classification."""

from flax import nnx

_KERNEL = 5
_POOL = 2

# Caffe's "xavier" filler, which DIGITS' LeNet used, draws uniformly with
# variance 1/fan_in: that is LeCun uniform, not Glorot.
_init = nnx.initializers.lecun_uniform()


def _feature_size(n: int) -> int:
    """Side length after conv -> pool -> conv -> pool (no padding, floor pooling)."""
    for _ in range(2):
        n = (n - _KERNEL + 1) // _POOL
    return n


class LeNet(nnx.Module):
    """conv 5x5x20 -> maxpool 2 -> conv 5x5x50 -> maxpool 2 -> dense 500 -> relu -> dense.

    Takes NHWC float images and returns unnormalised logits.
    """

    # Smallest side that still leaves one pixel after the second pool.
    min_size = next(n for n in range(1, 64) if _feature_size(n) >= 1)

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_classes: int,
        *,
        rngs: nnx.Rngs,
    ):
        height, width, channels = input_shape
        if min(height, width) < self.min_size:
            raise ValueError(
                f"LeNet needs images of at least {self.min_size}x{self.min_size} "
                f"pixels; this dataset's images are {height}x{width}."
            )
        self.conv1 = nnx.Conv(channels, 20, (_KERNEL, _KERNEL), padding="VALID", kernel_init=_init, rngs=rngs)
        self.conv2 = nnx.Conv(20, 50, (_KERNEL, _KERNEL), padding="VALID", kernel_init=_init, rngs=rngs)
        flat = 50 * _feature_size(height) * _feature_size(width)
        self.fc1 = nnx.Linear(flat, 500, kernel_init=_init, rngs=rngs)
        self.fc2 = nnx.Linear(500, num_classes, kernel_init=_init, rngs=rngs)

    def __call__(self, x):
        window = (_POOL, _POOL)
        x = nnx.max_pool(self.conv1(x), window, strides=window)
        x = nnx.max_pool(self.conv2(x), window, strides=window)
        x = x.reshape(x.shape[0], -1)
        return self.fc2(nnx.relu(self.fc1(x)))
