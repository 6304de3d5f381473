"""Data transformations, applied on the device inside the jitted steps.

Pure JAX functions on whole (N, H, W, C) batches, every image drawing its own
random choices from one key, so they work for any network and cost no host
time. ``train_transform`` is the random training version; ``eval_transform``
is its deterministic part (mean subtraction, centre crop), shared by
validation and inference so that what the network sees cannot drift apart.

Pixel values: uint8 images become ``(x - mean) / 255`` (as DIGITS did); noise
and HSV amounts are in that [0, 1] scale, as DIGITS' form described them.
Rotations fill the corners with 0, which after mean subtraction is the mean.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from training.config import FLIPS, MEANS, QUAD_ROTATIONS, Augmentation  # noqa: F401  (re-exported)


def preprocess(x, mean):
    """uint8 images -> float32 network input: (x - mean) / 255, as DIGITS did.

    Works on numpy and JAX arrays alike; ``mean`` is a mean image (H, W, C), a
    mean pixel (C,) or None.
    """
    x = x.astype(np.float32)
    if mean is not None:
        x = x - mean
    return x / 255.0


def resolve_mean(augmentation: Augmentation, mean_image: np.ndarray | None) -> np.ndarray | None:
    """The mean to subtract: the image, its per-channel pixel (DIGITS' "pixel"), or None."""
    if mean_image is None or augmentation.use_mean == "none":
        return None
    mean_image = np.asarray(mean_image, np.float32)
    if augmentation.use_mean == "pixel":
        return mean_image.mean(axis=(0, 1), dtype=np.float32)
    return mean_image


# --- the two pipelines ------------------------------------------------------------


def eval_transform(augmentation: Augmentation, images, mean):
    """The deterministic transform: mean subtraction, then the centre crop."""
    x = preprocess(images, mean)
    if augmentation.crop_size is not None:
        x = center_crop(x, augmentation.crop_size)
    return x


def train_transform(augmentation: Augmentation, key, images, mean):
    """The training transform for a uint8 batch; each image draws its own randomness from ``key``."""
    a = augmentation
    k_hsv, k_crop, k_flip, k_quad, k_rot, k_noise = jax.random.split(key, 6)
    x = images
    if a.hsv and x.shape[-1] == 3:
        x = random_hsv(k_hsv, x.astype(jnp.float32) / 255.0, a.hsv_h, a.hsv_s, a.hsv_v) * 255.0
    # Mean before cropping: the mean image is full-size, like the images (Caffe crops both alike).
    x = preprocess(x, mean)
    if a.crop_size is not None:
        x = random_crop(k_crop, x, a.crop_size)
    if a.flip != "none":
        x = random_flip(
            k_flip, x, horizontal=a.flip in ("fliplr", "fliplrud"), vertical=a.flip in ("flipud", "fliplrud")
        )
    if a.quad_rot != "none":
        x = random_quarter_turns(k_quad, x, QUAD_ROTATIONS[a.quad_rot])
    if a.rotation:
        x = random_rotate(k_rot, x, a.rotation)
    if a.noise:
        x = add_noise(k_noise, x, a.noise)
    return x


# --- geometry -------------------------------------------------------------------------


def center_crop(x, size: int):
    height, width = x.shape[1:3]
    top, left = (height - size) // 2, (width - size) // 2
    return x[:, top : top + size, left : left + size]


def random_crop(key, x, size: int):
    """A size x size window at a uniformly random position, per image."""
    n, height, width, channels = x.shape
    k_top, k_left = jax.random.split(key)
    tops = jax.random.randint(k_top, (n,), 0, height - size + 1)
    lefts = jax.random.randint(k_left, (n,), 0, width - size + 1)

    def crop(image, top, left):
        return jax.lax.dynamic_slice(image, (top, left, 0), (size, size, channels))

    return jax.vmap(crop)(x, tops, lefts)


def random_flip(key, x, *, horizontal: bool, vertical: bool):
    """Each enabled flip applied to each image with probability 1/2, independently."""
    k_h, k_v = jax.random.split(key)
    n = x.shape[0]
    if horizontal:
        x = jnp.where(_per_image(jax.random.bernoulli(k_h, 0.5, (n,))), x[:, :, ::-1], x)
    if vertical:
        x = jnp.where(_per_image(jax.random.bernoulli(k_v, 0.5, (n,))), x[:, ::-1], x)
    return x


def random_quarter_turns(key, x, turns: tuple[int, ...]):
    """Rotate each image counter-clockwise by 90° times a draw from ``turns``."""
    k = jnp.asarray(turns)[jax.random.randint(key, (x.shape[0],), 0, len(turns))]
    out = x
    for t in turns:
        if t:
            out = jnp.where(_per_image(k == t), jnp.rot90(x, t, axes=(1, 2)), out)
    return out


def random_rotate(key, x, max_degrees: float):
    """Rotate each image by a uniform angle in ± max_degrees about its centre."""
    angles = jax.random.uniform(key, (x.shape[0],), minval=-max_degrees, maxval=max_degrees)
    return rotate(x, angles)


def rotate(x, degrees):
    """Rotate image i counter-clockwise by degrees[i], bilinear, 0 outside the image."""
    height, width = x.shape[1:3]
    rows, cols = jnp.meshgrid(
        jnp.arange(height, dtype=jnp.float32), jnp.arange(width, dtype=jnp.float32), indexing="ij"
    )
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0

    def one(image, angle):
        # Where each output pixel comes from: the inverse rotation of its position.
        t = jnp.deg2rad(angle)
        cos, sin = jnp.cos(t), jnp.sin(t)
        src_rows = cy + cos * (rows - cy) + sin * (cols - cx)
        src_cols = cx - sin * (rows - cy) + cos * (cols - cx)

        def channel(plane):
            return jax.scipy.ndimage.map_coordinates(plane, [src_rows, src_cols], order=1, mode="constant", cval=0.0)

        return jax.vmap(channel, in_axes=2, out_axes=2)(image)

    return jax.vmap(one)(x, jnp.asarray(degrees, jnp.float32))


# --- photometric ------------------------------------------------------------------------


def add_noise(key, x, std: float):
    return x + std * jax.random.normal(key, x.shape, x.dtype)


def random_hsv(key, x, hue_std: float, saturation_std: float, value_std: float):
    """Shift each RGB image's hue, saturation and value by normal draws (x in [0, 1]).

    Grayscale (or any non-3-channel) batches are returned unchanged: they have no hue.
    """
    if x.shape[-1] != 3:
        return x
    shifts = jax.random.normal(key, (x.shape[0], 3)) * jnp.asarray([hue_std, saturation_std, value_std])
    hsv = rgb_to_hsv(x)
    h = (hsv[..., 0] + shifts[:, 0, None, None]) % 1.0
    s = jnp.clip(hsv[..., 1] + shifts[:, 1, None, None], 0.0, 1.0)
    v = jnp.clip(hsv[..., 2] + shifts[:, 2, None, None], 0.0, 1.0)
    return hsv_to_rgb(jnp.stack([h, s, v], axis=-1))


def rgb_to_hsv(rgb):
    """RGB in [0, 1] -> HSV in [0, 1], hue as a fraction of the circle (colorsys' convention)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    maxc = jnp.max(rgb, axis=-1)
    minc = jnp.min(rgb, axis=-1)
    spread = maxc - minc
    s = jnp.where(maxc > 0, spread / jnp.where(maxc > 0, maxc, 1.0), 0.0)
    safe = jnp.where(spread > 0, spread, 1.0)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = jnp.where(r == maxc, bc - gc, jnp.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
    h = jnp.where(spread > 0, (h / 6.0) % 1.0, 0.0)
    return jnp.stack([h, s, maxc], axis=-1)


def hsv_to_rgb(hsv):
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sector = jnp.floor(h * 6.0)
    f = h * 6.0 - sector
    p, q, t = v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))
    sector = sector.astype(jnp.int32) % 6
    r = jnp.choose(sector, [v, q, p, p, t, v], mode="clip")
    g = jnp.choose(sector, [t, v, v, q, p, p], mode="clip")
    b = jnp.choose(sector, [p, p, t, v, v, q], mode="clip")
    return jnp.stack([r, g, b], axis=-1)


def _per_image(flags):
    return flags[:, None, None, None]
