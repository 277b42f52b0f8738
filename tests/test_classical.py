import numpy as np
import pytest

from augment.classical import PRESETS, augment_images, build_pipeline


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("shape", [(8, 8, 1), (32, 32, 3)])
def test_presets_run_on_small_and_colour_images(preset, shape):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, *shape), dtype=np.uint8)
    out = augment_images(images, [1, 2, 3], build_pipeline(PRESETS[preset]), copies=2)
    assert out.shape == (6, *shape) and out.dtype == np.uint8
    assert not np.array_equal(out[0], images[0])


def test_each_parent_has_its_own_seeded_stream():
    """The same image with the same seed gives the same copies, whatever order images come in."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    pipeline = build_pipeline(PRESETS["medium"])
    forward = augment_images(images, [10, 11, 12], pipeline, copies=2)
    backward = augment_images(images[::-1], [12, 11, 10], pipeline, copies=2)
    assert np.array_equal(forward[0:2], backward[4:6])
    assert not np.array_equal(forward[0], forward[1])  # two copies of one parent differ


def test_seed_count_must_match():
    with pytest.raises(ValueError):
        augment_images(np.zeros((2, 8, 8, 1), np.uint8), [1], build_pipeline(PRESETS["light"]), 1)
