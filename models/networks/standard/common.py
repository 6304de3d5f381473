"""Shorthands for writing the standard networks' specs in Python."""

# Below this many pixels on the shorter side, AlexNet, GoogLeNet and ResNet-20
# swap their ImageNet stem (stride 2 or 4, built for 224x224) for a stride-1
# one, so that 28x28 or 32x32 images keep enough resolution for the later
# pools. At 112 the ImageNet stems still leave GoogLeNet's last stage 4x4.
SMALL_IMAGE = 112


def layer(kind: str, name: str | None = None, **params) -> dict:
    spec = {"type": kind}
    if name is not None:
        spec["name"] = name
    spec.update(params)
    return spec


def conv(features, kernel, name: str | None = None, **params) -> dict:
    return layer("conv", name, features=features, kernel=kernel, **params)


def is_small(height: int, width: int) -> bool:
    return min(height, width) < SMALL_IMAGE
