"""The on-device data transformations: each does what its name says, on
every image separately, and evaluation gets only the deterministic part."""

import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from training import augment
from training.augment import Augmentation

KEY = jax.random.key(0)
# Jitted as the engine runs them; op by op they take several times longer to test.
train_transform = jax.jit(augment.train_transform, static_argnums=0)
random_hsv = jax.jit(augment.random_hsv)
rgb_to_hsv = jax.jit(augment.rgb_to_hsv)
hsv_to_rgb = jax.jit(augment.hsv_to_rgb)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """64 asymmetric 12x12 RGB uint8 images: no flip or turn maps one onto itself."""
    return np.random.default_rng(0).integers(0, 256, (64, 12, 12, 3), dtype=np.uint8)


def test_flips_mirror_some_images_and_keep_the_others(images):
    x = jnp.asarray(images, jnp.float32)
    for horizontal, axis in ((True, 2), (False, 1)):
        out = np.asarray(augment.random_flip(KEY, x, horizontal=horizontal, vertical=not horizontal))
        flipped = [np.array_equal(o, np.flip(i, axis - 1)) for o, i in zip(out, images, strict=True)]
        kept = [np.array_equal(o, i) for o, i in zip(out, images, strict=True)]
        assert all(f != k for f, k in zip(flipped, kept, strict=True))  # each image one or the other
        assert 16 < sum(flipped) < 48  # about half


def test_quarter_turns_rotate_each_image_by_an_allowed_multiple(images):
    x = jnp.asarray(images, jnp.float32)
    for choice, allowed in augment.QUAD_ROTATIONS.items():
        out = np.asarray(augment.random_quarter_turns(KEY, x, allowed))
        turns = []
        for o, i in zip(out, images, strict=True):
            (k,) = [k for k in range(4) if np.array_equal(o, np.rot90(i, k))]
            turns.append(k)
        assert set(turns) == set(allowed), choice


def test_rotate_by_ninety_degrees_is_a_quarter_turn(images):
    x = jnp.asarray(images[:4], jnp.float32)
    np.testing.assert_allclose(augment.rotate(x, jnp.full(4, 90.0)), np.rot90(images[:4], 1, axes=(1, 2)), atol=1e-3)
    np.testing.assert_allclose(augment.rotate(x, jnp.zeros(4)), images[:4], atol=1e-4)


def test_small_rotations_stay_small_and_fill_corners_with_zero(images):
    x = jnp.ones((8, 12, 12, 1))
    out = np.asarray(augment.random_rotate(KEY, x, 10.0))
    assert out.shape == x.shape
    np.testing.assert_allclose(out[:, 4:8, 4:8], 1.0, atol=1e-5)  # the centre is still inside
    assert (out[:, 0, 0] < 1).any()  # a rotated corner reaches outside, where there is 0


def test_random_crop_takes_a_window_of_the_image(images):
    aug = Augmentation(use_mean="none", crop_size=8)
    out = np.asarray(train_transform(aug, KEY, images, None))
    assert out.shape == (64, 8, 8, 3)
    full = images.astype(np.float32) / 255
    offsets = set()
    for crop, image in zip(out, full, strict=True):
        hits = [
            (top, left)
            for top in range(5)
            for left in range(5)
            if np.allclose(crop, image[top : top + 8, left : left + 8])
        ]
        assert hits
        offsets.add(hits[0])
    assert len(offsets) > 5  # positions differ per image


def test_eval_transform_is_the_deterministic_part(images):
    mean = images.mean(axis=0, dtype=np.float32)
    aug = Augmentation(crop_size=8, flip="fliplrud", quad_rot="rotall", rotation=20, noise=0.1, hsv=True)
    out = np.asarray(augment.eval_transform(aug, images, mean))
    # Mean subtraction, then the centre crop; nothing random.
    np.testing.assert_allclose(out, augment.preprocess(images, mean)[:, 2:10, 2:10], rtol=1e-6)
    np.testing.assert_array_equal(out, np.asarray(augment.eval_transform(aug, images, mean)))
    # Without a crop it is exactly preprocess, what predict has always done.
    plain = np.asarray(augment.eval_transform(Augmentation(), images, mean))
    np.testing.assert_array_equal(plain, augment.preprocess(images, mean))


def test_train_transform_follows_its_key(images):
    aug = Augmentation(crop_size=10, flip="fliplr", rotation=5, noise=0.05, hsv=True)
    a = train_transform(aug, KEY, images, None)
    np.testing.assert_array_equal(a, train_transform(aug, KEY, images, None))
    assert not np.allclose(a, train_transform(aug, jax.random.key(1), images, None))


def test_mean_modes():
    mean_image = np.random.default_rng(1).uniform(0, 255, (4, 4, 3)).astype(np.float32)
    assert augment.resolve_mean(Augmentation(use_mean="none"), mean_image) is None
    assert augment.resolve_mean(Augmentation(use_mean="image"), None) is None
    np.testing.assert_array_equal(augment.resolve_mean(Augmentation(use_mean="image"), mean_image), mean_image)
    pixel = augment.resolve_mean(Augmentation(use_mean="pixel"), mean_image)
    np.testing.assert_allclose(pixel, mean_image.reshape(-1, 3).mean(axis=0), rtol=1e-6)
    x = np.full((1, 4, 4, 3), 255, np.uint8)
    np.testing.assert_allclose(augment.preprocess(x, pixel)[0, 0, 0], (255 - pixel) / 255, rtol=1e-6)


def test_noise_has_the_asked_for_spread():
    out = np.asarray(augment.add_noise(KEY, jnp.zeros((64, 32, 32, 3)), 0.1))
    assert abs(out.mean()) < 0.002
    assert out.std() == pytest.approx(0.1, rel=0.02)


def test_hsv_conversion_matches_colorsys():
    rgb = np.random.default_rng(2).uniform(0, 1, (50, 3)).astype(np.float32)
    rgb[0] = [0.5, 0.5, 0.5]  # gray: no hue
    rgb[1] = [0, 0, 0]
    expected = np.array([colorsys.rgb_to_hsv(*c) for c in rgb])
    hsv = np.asarray(rgb_to_hsv(jnp.asarray(rgb)))
    np.testing.assert_allclose(hsv, expected, atol=1e-5)
    np.testing.assert_allclose(hsv_to_rgb(hsv), rgb, atol=1e-5)


def test_hsv_shifts_color_images_and_leaves_gray_ones_alone(images):
    x = jnp.asarray(images, jnp.float32) / 255
    shifted = np.asarray(random_hsv(KEY, x, 0.02, 0.04, 0.06))
    assert shifted.min() >= 0 and shifted.max() <= 1
    assert 0.001 < np.abs(shifted - x).mean() < 0.2
    np.testing.assert_allclose(random_hsv(KEY, x, 0.0, 0.0, 0.0), x, atol=1e-5)
    gray = x[..., :1]
    np.testing.assert_array_equal(random_hsv(KEY, gray, 0.02, 0.04, 0.06), gray)
    # The whole pipeline too: HSV on a grayscale dataset changes nothing.
    aug = Augmentation(flip="fliplr", noise=0.01)
    with_hsv = train_transform(Augmentation(flip="fliplr", noise=0.01, hsv=True), KEY, images[..., :1], None)
    np.testing.assert_array_equal(with_hsv, train_transform(aug, KEY, images[..., :1], None))


def test_input_shape_is_the_crop():
    assert Augmentation().input_shape((28, 28, 1)) == (28, 28, 1)
    assert Augmentation(crop_size=24).input_shape((28, 32, 3)) == (24, 24, 3)
    assert not Augmentation().is_random and Augmentation(crop_size=24).is_random


@pytest.mark.parametrize(
    ("fields", "shape", "message"),
    [
        ({"use_mean": "median"}, None, "Mean subtraction"),
        ({"crop_size": 40}, (32, 32, 3), "larger than the images"),
        ({"crop_size": 0}, None, "Crop size"),
        ({"flip": "sideways"}, None, "Flipping"),
        ({"quad_rot": "rot90"}, (32, 48, 3), "square"),
        ({"rotation": 200}, None, "Rotation"),
        ({"noise": -0.1}, None, "Noise"),
        ({"hsv_h": 0.9}, None, "HSV H"),
    ],
)
def test_bad_augmentation_is_rejected(fields, shape, message):
    with pytest.raises(ValueError, match=message):
        Augmentation(**fields).validate(shape)


def test_quarter_turns_of_non_square_images_are_fine_with_a_crop():
    Augmentation(quad_rot="rotall", crop_size=24).validate((32, 48, 3))
    Augmentation(quad_rot="rot180").validate((32, 48, 3))
